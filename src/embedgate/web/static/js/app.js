// The console's shell: sign in, a navigation filtered by the key's permissions, hash routes.
// Hiding a page is convenience only; the API checks every request itself.
import { api, session } from "./api.js";
import { clear, h, toast } from "./dom.js";
import { lang, setLang, t } from "./i18n.js";
import * as overview from "./pages/overview.js";
import * as search from "./pages/search.js";
import * as embeddings from "./pages/embeddings.js";
import * as knowledge from "./pages/knowledge.js";
import * as keys from "./pages/keys.js";
import * as usage from "./pages/usage.js";
import * as audit from "./pages/audit.js";

const PAGES = { overview, search, embeddings, knowledge, keys, usage, audit };
const state = { me: null, notice: null, stop: null };

function allowed(page) {
  return state.me && state.me.permissions.includes(PAGES[page].needs);
}

function showSignIn(notice) {
  state.me = null;
  state.notice = notice || null;
  if (state.stop) { state.stop(); state.stop = null; }
  clear(document.getElementById("nav"));
  clear(document.getElementById("who"));
  document.getElementById("signout").hidden = true;
  const field = h("input", { id: "api-key", type: "password", autocomplete: "off", spellcheck: "false", required: true, placeholder: "eg_…" });
  const message = h("p", { class: "error", role: "alert" }, state.notice || "");
  const form = h("form", { class: "card signin", on: { submit: async (e) => {
    e.preventDefault();
    session.signIn(field.value.trim());
    try {
      await loadMe();
      const target = `#/${firstPage()}`;
      if (location.hash === target) route(); else location.hash = target;
    } catch (error) {
      session.signOut();
      clear(message, error.status === 401 ? t("signin.bad_key") : error.message);
    }
  } } },
  h("h1", {}, t("signin.title")),
  h("p", { class: "muted" }, t("signin.help")),
  h("label", { for: "api-key" }, t("signin.key")), field,
  h("button", { type: "submit" }, t("signin.submit")),
  message);
  clear(document.getElementById("main"), form);
  field.focus();
}

async function loadMe() {
  state.me = await api("GET", "/v1/me");
  renderChrome();
}

function firstPage() {
  return Object.keys(PAGES).find(allowed) || "search";
}

function renderChrome() {
  const nav = document.getElementById("nav");
  const current = (location.hash.match(/^#\/(\w+)/) || [])[1];
  clear(nav, Object.keys(PAGES).filter(allowed).map((page) =>
    h("a", { href: `#/${page}`, class: page === current ? "active" : "", "data-page": page }, t(`nav.${page}`))));
  const me = state.me;
  clear(document.getElementById("who"),
    h("span", { title: me.permissions.join(", ") }, `${me.subject} · ${t(`role.${me.role}`)}`));
  const out = document.getElementById("signout");
  out.hidden = false;
  out.textContent = t("signout");
}

function route() {
  if (!state.me) return showSignIn(state.notice);
  if (state.stop) { state.stop(); state.stop = null; }
  let page = (location.hash.match(/^#\/(\w+)/) || [])[1];
  if (!PAGES[page] || !allowed(page)) page = firstPage();
  renderChrome();
  const main = document.getElementById("main");
  clear(main, h("h1", { class: "page-title" }, t(`nav.${page}`)));
  const root = h("section", { class: `page page-${page}`, "data-page": page });
  main.append(root);
  state.stop = PAGES[page].render(root, { me: state.me }) || null;
}

function start() {
  const picker = document.getElementById("lang");
  picker.value = lang();
  document.documentElement.lang = lang();
  picker.addEventListener("change", () => { setLang(picker.value); if (state.me) route(); else showSignIn(state.notice); });
  document.getElementById("signout").addEventListener("click", () => { session.signOut(); showSignIn(); });
  session.whenRejected(() => {
    if (!state.me) return; // a wrong key at sign-in is answered by the form itself
    session.signOut();
    showSignIn(t("signin.rejected"));
    toast(t("signin.rejected"), "error");
  });
  window.addEventListener("hashchange", route);
  if (!session.key()) return showSignIn();
  loadMe().then(route).catch((error) => { session.signOut(); showSignIn(error.status === 401 ? t("signin.rejected") : error.message); });
}

start();

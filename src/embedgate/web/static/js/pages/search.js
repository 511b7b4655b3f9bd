// Search playground: one query, the three modes side by side (and hybrid reranked by a served
// reranker, when there is one), query terms highlighted (the server returns the terms it
// searched for, cut by the same jieba analyzer), each column naming the model that answered.
import { enc, get, post } from "../api.js";
import { clear, h } from "../dom.js";
import { t } from "../i18n.js";

export const needs = "search";
const MODES = ["dense", "lexical", "hybrid"];

export function render(root) {
  const collection = h("select", { id: "search-collection", "aria-label": t("search.collection") });
  const query = h("input", { id: "search-query", type: "search", required: true, maxlength: 8192, placeholder: t("search.query_hint") });
  const topK = h("input", { id: "search-top-k", type: "number", min: 1, max: 100, value: "5" });
  const instruction = h("input", { id: "search-instruction", type: "text", placeholder: t("search.instruction_hint") });
  const reranker = h("select", { id: "search-reranker", "aria-label": t("search.reranker") }, h("option", { value: "" }, t("search.no_rerank")));
  const rerankLabel = h("label", { hidden: true }, t("search.reranker"), reranker);
  const columns = h("div", { class: "columns three" });
  const form = h("form", { class: "card form-grid", on: { submit: (e) => { e.preventDefault(); run(); } } },
    h("label", {}, t("search.collection"), collection),
    h("label", { class: "wide" }, t("search.query"), query),
    h("label", {}, t("search.top_k"), topK),
    h("label", { class: "wide" }, t("search.instruction"), instruction),
    rerankLabel,
    h("button", { type: "submit", id: "search-run" }, t("search.run")));
  root.append(form, columns);

  get("/v1/collections").then((list) => {
    clear(collection, list.data.map((c) => h("option", { value: c.name }, c.name)));
    if (!list.data.length) clear(columns, h("p", { class: "muted" }, t("search.no_collections")));
  }).catch((error) => clear(columns, h("p", { class: "error" }, error.message)));
  get("/v1/models").then((models) => {
    const names = models.data.filter((m) => m.task === "rerank").map((m) => m.id);
    if (!names.length) return;
    clear(reranker, names.map((name) => h("option", { value: name }, name)), h("option", { value: "" }, t("search.no_rerank")));
    rerankLabel.hidden = false;
  }).catch(() => {}); // no reranker column: the three modes still work

  async function run() {
    const body = { query: query.value, top_k: Number(topK.value) || 5 };
    if (instruction.value.trim()) body.instruction = instruction.value.trim();
    const modes = reranker.value ? [...MODES, "reranked"] : MODES;
    columns.className = `columns ${modes.length === 4 ? "four" : "three"}`;
    clear(columns, modes.map((mode) => h("div", { class: "column", "data-mode": mode }, h("h2", {}, t(`search.${mode}`)), h("p", { class: "muted" }, "…"))));
    await Promise.all(modes.map(async (mode) => {
      const column = columns.querySelector(`[data-mode="${mode}"]`);
      const request = mode === "reranked" ? { ...body, mode: "hybrid", rerank: { model: reranker.value } } : { ...body, mode };
      try {
        const answer = await post(`/v1/collections/${enc(collection.value)}/search`, request);
        const source = [answer.model, mode === "reranked" ? reranker.value : null].filter(Boolean).join(" + ");
        clear(column, h("h2", {}, t(`search.${mode}`)),
          h("p", { class: "muted source", "data-model": answer.model || "" }, source ? `${source} · ${t("search.generation")} ${answer.generation}` : `${t("search.generation")} ${answer.generation}`),
          answer.data.length ? answer.data.map((hit, i) => hitCard(hit, i, answer.query_terms || [])) : h("p", { class: "muted" }, t("search.no_hits")));
      } catch (error) {
        clear(column, h("h2", {}, t(`search.${mode}`)), h("p", { class: "error" }, error.message));
      }
    }));
  }
}

function hitCard(hit, index, terms) {
  const pages = hit.page_start ? (hit.page_end && hit.page_end !== hit.page_start ? `${hit.page_start}–${hit.page_end}` : String(hit.page_start)) : null;
  const headings = Array.isArray(hit.headings) && hit.headings.length ? hit.headings.join(" › ") : null;
  return h("article", { class: "hit", "data-rank": index + 1 },
    h("header", {},
      h("span", { class: "rank" }, `#${index + 1}`),
      h("span", { class: "filename" }, hit.filename || hit.document_id || ""),
      hit.rerank_score !== undefined ? h("span", { class: "rerank-score", title: t("search.rerank_score") }, Number(hit.rerank_score).toFixed(3)) : null,
      h("span", { class: "score", title: t("search.score") }, Number(hit.score).toFixed(3))),
    h("div", { class: "meta muted" },
      pages ? h("span", {}, `${t("search.page")} ${pages}`) : null,
      headings ? h("span", { class: "headings" }, headings) : null,
      hit.dense_score !== undefined && hit.dense_score !== null ? h("span", {}, `dense ${Number(hit.dense_score).toFixed(3)}`) : null,
      hit.lexical_score !== undefined && hit.lexical_score !== null ? h("span", {}, `lexical ${Number(hit.lexical_score).toFixed(3)}`) : null),
    h("p", { class: "passage" }, highlight(hit.text || "", terms)));
}

// Split text into plain and <mark> pieces where any term occurs (longest first, no case).
export function highlight(text, terms) {
  const wanted = [...new Set(terms.map((term) => term.toLowerCase()).filter(Boolean))].sort((a, b) => b.length - a.length);
  if (!wanted.length) return [text];
  const lower = text.toLowerCase();
  if (lower.length !== text.length) return [text]; // case folding changed offsets: show plain
  const out = [];
  let plain = 0, i = 0;
  while (i < text.length) {
    const term = wanted.find((w) => lower.startsWith(w, i) && boundary(lower, i, w));
    if (term) {
      if (i > plain) out.push(text.slice(plain, i));
      out.push(h("mark", {}, text.slice(i, i + term.length)));
      i += term.length;
      plain = i;
    } else {
      i += 1;
    }
  }
  if (plain < text.length) out.push(text.slice(plain));
  return out;
}

// Latin terms match whole words; CJK terms match anywhere (no spaces between words).
function boundary(lower, i, term) {
  if (!/^[a-z0-9]/.test(term)) return true;
  const before = i > 0 ? lower[i - 1] : " ";
  const after = lower[i + term.length] || " ";
  return !/[a-z0-9]/.test(before) && !/[a-z0-9]/.test(after);
}

// Two catalogues, one per language; every visible string goes through t().
import en from "./lang/en.js";
import zh from "./lang/zh-CN.js";

const CATALOGUES = { en, "zh-CN": zh };
const STORED = "embedgate.lang";
let current = localStorage.getItem(STORED) || (navigator.language?.startsWith("zh") ? "zh-CN" : "en");
if (!CATALOGUES[current]) current = "en";

export function lang() { return current; }
export function setLang(next) {
  if (!CATALOGUES[next]) return;
  current = next;
  localStorage.setItem(STORED, next);
  document.documentElement.lang = next;
}
export function languages() { return Object.keys(CATALOGUES); }

export function t(key, vars = {}) {
  const text = CATALOGUES[current][key] ?? en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (vars[name] ?? `{${name}}`));
}

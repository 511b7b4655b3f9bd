// Embeddings playground: up to 20 texts, their pairwise cosine similarity as a heatmap, their
// token counts, and the exact text the model saw (instruction applied by the server's rules).
import { get, post } from "../api.js";
import { clear, fmtNumber, h, table } from "../dom.js";
import { heatmap } from "../charts.js";
import { t } from "../i18n.js";

export const needs = "embed";
const MAX_TEXTS = 20;

export function render(root) {
  const texts = h("textarea", { id: "embed-texts", rows: 8, placeholder: t("embed.texts_hint") });
  const kind = h("select", { id: "embed-type" },
    h("option", { value: "document" }, t("embed.document")), h("option", { value: "query" }, t("embed.query")));
  const dimensions = h("input", { id: "embed-dimensions", type: "number", min: 1, placeholder: t("embed.native") });
  const instruction = h("input", { id: "embed-instruction", type: "text", placeholder: t("search.instruction_hint") });
  const out = h("div", { class: "embed-results" });
  const form = h("form", { class: "card form-grid", on: { submit: (e) => { e.preventDefault(); run(); } } },
    h("label", { class: "full" }, t("embed.texts"), texts),
    h("label", {}, t("embed.input_type"), kind),
    h("label", {}, t("embed.dimensions"), dimensions),
    h("label", { class: "wide" }, t("search.instruction"), instruction),
    h("button", { type: "submit", id: "embed-run" }, t("embed.run")));
  root.append(form, out);
  get("/v1/models").then((models) => {
    const [low, high] = models.data[0].dimensions_range;
    dimensions.min = String(low);
    dimensions.max = String(high);
    dimensions.placeholder = `${t("embed.native")} (${high})`;
    dimensions.disabled = low === high;
  }).catch(() => {});

  async function run() {
    const inputs = texts.value.split("\n").map((line) => line.trim()).filter(Boolean);
    if (!inputs.length) return clear(out, h("p", { class: "error" }, t("embed.none")));
    if (inputs.length > MAX_TEXTS) return clear(out, h("p", { class: "error" }, t("embed.too_many", { max: MAX_TEXTS })));
    const common = { input: inputs, input_type: kind.value };
    if (instruction.value.trim() && kind.value === "query") common.instruction = instruction.value.trim();
    const body = { ...common, encoding_format: "float" };
    if (dimensions.value) body.dimensions = Number(dimensions.value);
    clear(out, h("p", { class: "muted" }, "…"));
    try {
      const [seen, embedded] = await Promise.all([post("/v1/tokenize", common), post("/v1/embeddings", body)]);
      const vectors = embedded.data.sort((a, b) => a.index - b.index).map((d) => d.embedding);
      const matrix = vectors.map((a) => vectors.map((b) => cosine(a, b)));
      const names = inputs.map((_, i) => `#${i + 1}`);
      clear(out,
        h("p", { class: "muted", id: "embed-summary" }, t("embed.summary", { n: vectors.length, dims: vectors[0].length, tokens: fmtNumber(embedded.usage.prompt_tokens) })),
        heatmap(t("embed.heatmap"), matrix, names),
        table([
          { label: "#", cell: (row) => `#${row.index + 1}` },
          { label: t("embed.tokens"), cell: (row) => `${row.tokens}${row.truncated ? ` (${t("embed.truncated")})` : ""}` },
          { label: t("embed.seen"), cell: (row) => h("pre", { class: "seen" }, row.text) },
        ], seen.data));
    } catch (error) {
      clear(out, h("p", { class: "error" }, error.message));
    }
  }
}

function cosine(a, b) {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  return dot / (Math.sqrt(na * nb) || 1);
}

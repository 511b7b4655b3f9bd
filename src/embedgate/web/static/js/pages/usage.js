// Usage (admin): requests and tokens per key per hour or day, top keys, 4xx / 5xx per key.
import { get } from "../api.js";
import { clear, fmtNumber, h, table } from "../dom.js";
import { lineChart } from "../charts.js";
import { t } from "../i18n.js";

export const needs = "admin";

export function render(root) {
  const bucket = h("select", { id: "usage-bucket", on: { change: () => refresh() } },
    h("option", { value: "hour" }, t("usage.hour")), h("option", { value: "day" }, t("usage.day")));
  const out = h("div", {});
  root.append(h("div", { class: "card toolbar" }, h("label", {}, t("usage.bucket"), bucket)), out);

  async function refresh() {
    try {
      const answer = await get(`/v1/admin/usage?bucket=${bucket.value}`);
      const keys = [...answer.data].sort((a, b) => b.tokens - a.tokens || b.requests - a.requests);
      const labels = [...new Set(keys.flatMap((k) => k.series.map((p) => p.t)))].sort();
      const top = keys.slice(0, 5);
      const along = (key, field) => labels.map((label) => key.series.find((p) => p.t === label)?.[field] ?? 0);
      clear(out,
        labels.length ? h("div", { class: "charts" },
          lineChart(t("usage.tokens"), top.map((k) => ({ name: k.key_id, values: along(k, "tokens") })), labels),
          lineChart(t("usage.requests"), top.map((k) => ({ name: k.key_id, values: along(k, "requests") })), labels)) : null,
        h("h2", {}, t("usage.top")),
        table([
          { label: t("keys.key"), cell: (k) => h("code", {}, k.key_id) },
          { label: t("usage.requests"), cell: (k) => fmtNumber(k.requests) },
          { label: t("usage.tokens"), cell: (k) => fmtNumber(k.tokens) },
          { label: t("usage.models"), cell: (k) => Object.entries(k.models || {}).map(([name, m]) => `${name}: ${fmtNumber(m.tokens)}`).join(", ") },
          { label: "4xx", cell: (k) => fmtNumber(k.errors_4xx) },
          { label: "5xx", cell: (k) => fmtNumber(k.errors_5xx) },
        ], keys, { empty: t("usage.none") }));
    } catch (error) {
      clear(out, h("p", { class: "error" }, error.message));
    }
  }
  refresh();
}

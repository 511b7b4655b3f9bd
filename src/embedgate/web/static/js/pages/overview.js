// Overview (admin): the model, readiness, uptime, and the last hour minute by minute.
import { get } from "../api.js";
import { clear, fmtNumber, h } from "../dom.js";
import { lineChart } from "../charts.js";
import { t } from "../i18n.js";

export const needs = "admin";

export function render(root) {
  const facts = h("div", { class: "facts" });
  const charts = h("div", { class: "charts" });
  root.append(facts, charts);
  const refresh = async () => {
    try {
      const [models, stats, ready] = await Promise.all([
        get("/v1/models"), get("/v1/admin/stats"),
        fetch("/ready", { cache: "no-store" }).then(async (r) => ({ ok: r.ok, body: await r.json().catch(() => ({})) })),
      ]);
      const model = models.data[0];
      const [low, high] = model.dimensions_range;
      clear(facts,
        fact(t("overview.model"), model.id, "model"),
        fact(t("overview.dimensions"), low === high ? String(high) : `${high} (${low}–${high})`, "dimensions"),
        fact(t("overview.max_tokens"), fmtNumber(model.max_input_tokens), "max-tokens"),
        fact(t("overview.ready"), ready.ok ? t("overview.ready_yes") : `${t("overview.ready_no")}: ${ready.body.reason || ""}`, "ready"),
        fact(t("overview.uptime"), duration(stats.uptime_s), "uptime"),
        model.fingerprint ? fact(t("overview.fingerprint"), model.fingerprint, "fingerprint") : null);
      const minutes = stats.minutes;
      const labels = minutes.map((m) => new Date(m.t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
      const pick = (name) => minutes.map((m) => m[name]);
      clear(charts,
        lineChart(t("overview.requests"), [{ name: t("overview.requests"), values: pick("requests") }], labels),
        lineChart(t("overview.tokens"), [{ name: t("overview.tokens"), values: pick("tokens") }], labels),
        lineChart(t("overview.latency"), [{ name: "p50", values: pick("p50_ms") }, { name: "p95", values: pick("p95_ms") }], labels, { unit: " ms" }),
        lineChart(t("overview.queue"), [{ name: t("overview.queue"), values: pick("queue_max") }], labels),
        lineChart(t("overview.errors"), [{ name: "4xx", values: pick("errors_4xx") }, { name: "5xx", values: pick("errors_5xx") }], labels));
    } catch (error) {
      clear(facts, h("p", { class: "error" }, error.message));
    }
  };
  refresh();
  const timer = setInterval(refresh, 10000);
  return () => clearInterval(timer);
}

function fact(label, value, name) {
  return h("div", { class: "card fact", "data-fact": name }, h("div", { class: "muted" }, label), h("div", { class: "value" }, value));
}

function duration(seconds) {
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400), hr = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  return d ? `${d}d ${hr}h` : hr ? `${hr}h ${m}m` : `${m}m ${s % 60}s`;
}

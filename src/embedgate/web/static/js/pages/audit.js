// Audit (admin): a filterable table of the tamper-evident log, a detail view, and a button
// that verifies the whole hash chain on the server.
import { get } from "../api.js";
import { clear, fmtTime, h, table } from "../dom.js";
import { t } from "../i18n.js";

export const needs = "admin";

export function render(root) {
  const filters = {
    key_id: h("input", { id: "audit-key", placeholder: "key id" }),
    route: h("input", { id: "audit-route", placeholder: "/v1/embeddings" }),
    status: h("input", { id: "audit-status", type: "number", min: 100, max: 599 }),
    since: h("input", { id: "audit-since", type: "datetime-local" }),
    until: h("input", { id: "audit-until", type: "datetime-local" }),
  };
  const verdict = h("span", { id: "verify-result", role: "status" });
  const rows = h("div", { id: "audit-rows" });
  const detail = h("pre", { id: "audit-detail", class: "card detail", hidden: true });
  const form = h("form", { class: "card form-grid", on: { submit: (e) => { e.preventDefault(); refresh(); } } },
    h("label", {}, t("audit.key"), filters.key_id),
    h("label", {}, t("audit.route"), filters.route),
    h("label", {}, t("audit.status"), filters.status),
    h("label", {}, t("audit.since"), filters.since),
    h("label", {}, t("audit.until"), filters.until),
    h("button", { type: "submit", id: "audit-filter" }, t("audit.filter")),
    h("button", { type: "button", class: "secondary", id: "audit-verify", on: { click: verify } }, t("audit.verify")),
    verdict);
  root.append(form, detail, rows);

  async function verify() {
    clear(verdict, "…");
    try {
      const result = await get("/v1/admin/audit/verify");
      verdict.className = result.intact ? "ok" : "error";
      clear(verdict, result.intact ? t("audit.intact", { n: result.records }) : t("audit.broken", { line: result.bad_line, reason: result.reason }));
    } catch (error) {
      verdict.className = "error";
      clear(verdict, error.message);
    }
  }

  async function refresh() {
    const query = new URLSearchParams({ limit: "200" });
    for (const [name, field] of Object.entries(filters)) {
      if (!field.value) continue;
      query.set(name, name === "since" || name === "until" ? new Date(field.value).toISOString() : field.value.trim());
    }
    try {
      const answer = await get(`/v1/admin/audit?${query}`);
      clear(rows, table([
        { label: t("audit.time"), cell: (r) => fmtTime(r.ts) },
        { label: t("audit.kind"), cell: (r) => (r.kind === "admin" ? r.action : r.kind) },
        { label: t("audit.key"), cell: (r) => r.key_id || r.actor || "–" },
        { label: t("audit.route"), cell: (r) => (r.route ? `${r.method || ""} ${r.route}` : r.target || "") },
        { label: t("audit.status"), cell: (r) => r.status ?? "" },
      ], answer.data, { empty: t("audit.none"), onRow: (record) => { detail.hidden = false; clear(detail, JSON.stringify(record, null, 2)); detail.scrollIntoView({ block: "nearest" }); } }));
    } catch (error) {
      clear(rows, h("p", { class: "error" }, error.message));
    }
  }
  refresh();
}

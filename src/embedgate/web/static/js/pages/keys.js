// Keys (admin): list (redacted), create, show a new key once with a copy button, rotate with
// a grace period, revoke with confirmation.
import { del, enc, get, post } from "../api.js";
import { clear, confirmDialog, fmtTime, h, table, toast } from "../dom.js";
import { t } from "../i18n.js";

export const needs = "admin";

export function render(root) {
  const fields = {
    name: h("input", { id: "key-name", required: true, maxlength: 200 }),
    role: h("select", { id: "key-role" }, ["reader", "writer", "admin", "monitor"].map((r) => h("option", { value: r }, t(`role.${r}`)))),
    collections: h("input", { id: "key-collections", placeholder: t("keys.all_collections") }),
    models: h("input", { id: "key-models", placeholder: t("keys.all_models") }),
    expires_in: h("input", { id: "key-expires", placeholder: "90d" }),
    rpm: h("input", { id: "key-rpm", type: "number", min: 1 }),
    tpm: h("input", { id: "key-tpm", type: "number", min: 1 }),
    cidrs: h("input", { id: "key-cidrs", placeholder: "10.0.0.0/8, 192.168.1.0/24" }),
  };
  const issued = h("div", { id: "issued" });
  const list = h("div", { id: "key-list" });
  const form = h("form", { class: "card form-grid", on: { submit: (e) => { e.preventDefault(); create(); } } },
    h("h2", { class: "full" }, t("keys.create")),
    h("label", {}, t("keys.name"), fields.name),
    h("label", {}, t("keys.role"), fields.role),
    h("label", {}, t("keys.collections"), fields.collections),
    h("label", {}, t("keys.models"), fields.models),
    h("label", {}, t("keys.expires"), fields.expires_in),
    h("label", {}, "RPM", fields.rpm),
    h("label", {}, "TPM", fields.tpm),
    h("label", { class: "wide" }, t("keys.cidrs"), fields.cidrs),
    h("button", { type: "submit", id: "key-create" }, t("keys.create")));
  root.append(form, issued, list);

  const split = (value) => value.split(",").map((part) => part.trim()).filter(Boolean);

  async function create() {
    const body = { name: fields.name.value.trim(), role: fields.role.value };
    if (fields.collections.value.trim()) body.collections = split(fields.collections.value);
    if (fields.models.value.trim()) body.models = split(fields.models.value);
    if (fields.expires_in.value.trim()) body.expires_in = fields.expires_in.value.trim();
    if (fields.rpm.value) body.rpm = Number(fields.rpm.value);
    if (fields.tpm.value) body.tpm = Number(fields.tpm.value);
    if (fields.cidrs.value.trim()) body.cidrs = split(fields.cidrs.value);
    try {
      showOnce(await post("/v1/admin/keys", body));
      fields.name.value = "";
      await refresh();
    } catch (error) {
      toast(error.message, "error");
    }
  }

  function showOnce(created) {
    const value = h("code", { id: "new-key" }, created.key);
    const copied = h("span", { class: "muted", id: "copy-state" });
    clear(issued, h("div", { class: "card warning", role: "alert" },
      h("h2", {}, t("keys.issued", { name: created.name })),
      h("p", {}, t("keys.once")),
      h("div", { class: "key-box" }, value,
        h("button", { type: "button", id: "copy-key", on: { click: async () => {
          try {
            await navigator.clipboard.writeText(created.key);
            clear(copied, t("keys.copied"));
          } catch {
            const range = document.createRange();
            range.selectNodeContents(value);
            getSelection().removeAllRanges();
            getSelection().addRange(range);
            clear(copied, t("keys.copy_manually"));
          }
        } } }, t("keys.copy")), copied),
      h("button", { type: "button", class: "secondary", on: { click: () => issued.replaceChildren() } }, t("keys.done"))));
  }

  async function rotate(key) {
    const grace = await confirmDialog(t("keys.rotate_confirm", { id: key.id }), {
      okLabel: t("keys.rotate"), cancelLabel: t("cancel"), input: { label: t("keys.grace"), value: "1h" },
    });
    if (grace === false) return;
    try {
      showOnce(await post(`/v1/admin/keys/${enc(key.id)}/rotate`, grace ? { grace } : {}));
      await refresh();
    } catch (error) {
      toast(error.message, "error");
    }
  }

  async function revoke(key) {
    if (!(await confirmDialog(t("keys.revoke_confirm", { id: key.id, name: key.name }), { okLabel: t("keys.revoke"), cancelLabel: t("cancel") }))) return;
    try {
      await del(`/v1/admin/keys/${enc(key.id)}`);
      toast(t("keys.revoked", { id: key.id }));
      await refresh();
    } catch (error) {
      toast(error.message, "error");
    }
  }

  async function refresh() {
    try {
      const answer = await get("/v1/admin/keys");
      clear(list, table([
        { label: t("keys.key"), cell: (k) => h("code", {}, k.key) },
        { label: t("keys.name"), cell: (k) => k.name },
        { label: t("keys.role"), cell: (k) => t(`role.${k.role}`) },
        { label: t("keys.collections"), cell: (k) => (k.collections ? k.collections.join(", ") : t("keys.all")) },
        { label: t("keys.models"), cell: (k) => (k.models ? k.models.join(", ") : t("keys.all")) },
        { label: t("keys.expires"), cell: (k) => fmtTime(k.expires_at) },
        { label: t("keys.last_used"), cell: (k) => fmtTime(k.last_used_at) },
        { label: t("keys.state"), cell: (k) => h("span", { class: `status ${k.active ? "ready" : "failed"}` }, k.revoked_at ? t("keys.state_revoked") : k.active ? t("keys.state_active") : t("keys.state_expired")) },
        { label: "", cell: (k) => (k.active ? h("span", { class: "row-actions", "data-key": k.id },
          h("button", { type: "button", class: "secondary small", "data-rotate": k.id, on: { click: () => rotate(k) } }, t("keys.rotate")),
          h("button", { type: "button", class: "danger small", "data-revoke": k.id, on: { click: () => revoke(k) } }, t("keys.revoke"))) : "") },
      ], answer.data, { empty: t("keys.none") }));
    } catch (error) {
      clear(list, h("p", { class: "error" }, error.message));
    }
  }
  refresh();
}

// Knowledge: collections (create, delete), drag-and-drop upload of many files with progress
// per file (bytes, then the job's stage and chunks), and the documents table.
import { del, enc, get, post, upload } from "../api.js";
import { clear, confirmDialog, fmtNumber, h, table, toast } from "../dom.js";
import { t } from "../i18n.js";

export const needs = "write";

export function render(root, { me }) {
  const canDelete = me.permissions.includes("delete");
  const list = h("div", { class: "collections" });
  const detail = h("div", { class: "collection-detail" });
  const name = h("input", { id: "collection-name", required: true, pattern: "[A-Za-z0-9_\\-]{1,64}", placeholder: "handbook" });
  const description = h("input", { id: "collection-description", type: "text" });
  const dimensions = h("input", { id: "collection-dimensions", type: "number" });
  const modelInfo = h("p", { class: "muted full", id: "collection-model" });
  const create = h("form", { class: "card form-grid", on: { submit: async (e) => {
    e.preventDefault();
    const body = { name: name.value.trim() };
    if (description.value.trim()) body.description = description.value.trim();
    if (dimensions.value && !dimensions.disabled) body.dimensions = Number(dimensions.value);
    try {
      await post("/v1/collections", body);
      toast(t("kb.created", { name: body.name }));
      name.value = "";
      await refresh(body.name);
    } catch (error) {
      toast(error.message, "error");
    }
  } } },
  h("h2", { class: "full" }, t("kb.create")),
  h("label", {}, t("kb.name"), name),
  h("label", {}, t("kb.description"), description),
  h("label", {}, t("embed.dimensions"), dimensions),
  modelInfo,
  h("button", { type: "submit", id: "collection-create" }, t("kb.create")));
  root.append(h("div", { class: "columns two" }, h("div", {}, create, list), detail));

  get("/v1/models").then((models) => {
    const model = models.data[0];
    const [low, high] = model.dimensions_range;
    clear(modelInfo, t("kb.model_is", { model: model.id, dims: high }));
    dimensions.placeholder = String(high);
    dimensions.min = String(low);
    dimensions.max = String(high);
    dimensions.disabled = low === high;
  }).catch(() => {});

  let selected = null;
  let polling = [];

  async function refresh(select) {
    try {
      const answer = await get("/v1/collections");
      clear(list, table([
        { label: t("kb.name"), cell: (c) => h("a", { href: "#/knowledge", "data-collection": c.name, on: { click: (e) => { e.preventDefault(); open(c.name); } } }, c.name) },
        { label: t("kb.model"), cell: (c) => `${c.model} · ${c.dimensions}` },
        { label: t("kb.documents"), cell: (c) => fmtNumber(c.documents) },
        { label: t("kb.chunks"), cell: (c) => fmtNumber(c.chunks) },
        { label: "", cell: (c) => canDelete ? h("button", { type: "button", class: "danger small", "data-delete-collection": c.name, on: { click: () => remove(c.name) } }, t("delete")) : "" },
      ], answer.data, { empty: t("kb.none") }));
      if (select) open(select);
    } catch (error) {
      clear(list, h("p", { class: "error" }, error.message));
    }
  }

  async function remove(collection) {
    if (!(await confirmDialog(t("kb.delete_confirm", { name: collection }), { okLabel: t("delete"), cancelLabel: t("cancel") }))) return;
    try {
      await del(`/v1/collections/${enc(collection)}`);
      toast(t("kb.deleted", { name: collection }));
      if (selected === collection) clear(detail);
      await refresh();
    } catch (error) {
      toast(error.message, "error");
    }
  }

  function open(collection) {
    selected = collection;
    const input = h("input", { type: "file", multiple: true, id: "upload-input", on: { change: () => send([...input.files]) } });
    const progress = h("ul", { class: "uploads", id: "uploads" });
    const drop = h("div", { class: "dropzone", id: "dropzone", tabindex: "0",
      on: {
        dragover: (e) => { e.preventDefault(); drop.classList.add("over"); },
        dragleave: () => drop.classList.remove("over"),
        drop: (e) => { e.preventDefault(); drop.classList.remove("over"); send([...e.dataTransfer.files]); },
      } }, t("kb.drop"), " ", h("label", { class: "button" }, t("kb.choose"), input));
    const docs = h("div", { id: "documents" });
    clear(detail, h("h2", {}, collection), drop, progress, docs);
    loadDocuments();

    async function loadDocuments() {
      try {
        const answer = await get(`/v1/collections/${enc(collection)}/documents`);
        clear(docs, table([
          { label: t("kb.file"), cell: (d) => h("span", { class: "filename" }, d.filename) },
          { label: t("kb.status"), cell: (d) => h("span", { class: `status ${d.status}` }, t(`status.${d.status}`)) },
          { label: t("kb.chunks"), cell: (d) => fmtNumber(d.chunks) },
          { label: t("kb.pages"), cell: (d) => d.pages ?? "–" },
          { label: t("kb.duplicates"), cell: (d) => d.duplicate_of ? t("kb.duplicate_of", { id: d.duplicate_of }) : (d.near_duplicates?.length ? String(d.near_duplicates.length) : "–") },
          { label: t("kb.error"), cell: (d) => d.error || "" },
          { label: "", cell: (d) => canDelete ? h("button", { type: "button", class: "danger small", on: { click: () => removeDocument(d) } }, t("delete")) : "" },
        ], answer.data, { empty: t("kb.no_documents") }));
      } catch (error) {
        clear(docs, h("p", { class: "error" }, error.message));
      }
    }

    async function removeDocument(doc) {
      if (!(await confirmDialog(t("kb.delete_doc_confirm", { name: doc.filename }), { okLabel: t("delete"), cancelLabel: t("cancel") }))) return;
      try {
        await del(`/v1/collections/${enc(collection)}/documents/${enc(doc.id)}`);
        await loadDocuments();
      } catch (error) {
        toast(error.message, "error");
      }
    }

    function send(files) {
      for (const file of files) {
        const bar = h("progress", { max: 100, value: 0 });
        const status = h("span", { class: "job-status" }, t("kb.uploading"));
        const row = h("li", { "data-file": file.name }, h("span", { class: "filename" }, file.name), bar, status);
        progress.append(row);
        upload(`/v1/collections/${enc(collection)}/documents`, file, (loaded, total) => { bar.value = Math.round((100 * loaded) / total); })
          .then((accepted) => { bar.value = 100; watch(accepted.job, status, row); })
          .catch((error) => { row.dataset.state = "failed"; clear(status, h("span", { class: "error" }, error.message)); });
      }
    }

    function watch(job, status, row) {
      const show = (j) => {
        row.dataset.state = j.status;
        clear(status, `${t(`status.${j.status}`)} · ${j.stage}${j.status === "running" ? ` ${Math.round(100 * j.progress)}%` : ""}`);
        if (j.error) status.append(h("span", { class: "error" }, ` ${j.error}`));
      };
      show(job);
      if (job.status === "succeeded" || job.status === "failed") { loadDocuments(); return; }
      const timer = setInterval(async () => {
        try {
          const now = await get(`/v1/jobs/${enc(job.id)}`);
          show(now);
          if (now.status === "succeeded" || now.status === "failed") {
            clearInterval(timer);
            loadDocuments();
          }
        } catch (error) {
          clearInterval(timer);
          clear(status, h("span", { class: "error" }, error.message));
        }
      }, 700);
      polling.push(timer);
    }
  }

  refresh();
  return () => { polling.forEach(clearInterval); polling = []; };
}

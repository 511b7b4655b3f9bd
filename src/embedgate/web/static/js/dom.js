// Building DOM from elements and text nodes only: every piece of data becomes a text node, so a document
// that contains <script> or a file named <img onerror=...> is shown, never run.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "on") {
      for (const [event, handler] of Object.entries(value)) el.addEventListener(event, handler);
    } else if (name === "class") {
      el.className = value;
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else if (name in el && typeof value !== "string") {
      el[name] = value; // value, checked, disabled as properties
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

const SVG = "http://www.w3.org/2000/svg";
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, String(value));
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function toast(message, kind = "info") {
  const box = document.getElementById("toast");
  clear(box, h("div", { class: `toast ${kind}` }, message));
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => box.replaceChildren(), 6000);
}

// An in-page confirmation (no window.confirm: the page never opens a browser dialog).
export function confirmDialog(message, { okLabel = "OK", cancelLabel = "Cancel", input = null } = {}) {
  return new Promise((resolve) => {
    const field = input ? h("input", { type: "text", placeholder: input.placeholder || "", value: input.value || "", "aria-label": input.label || "" }) : null;
    const done = (ok) => { overlay.remove(); resolve(ok ? (field ? field.value : true) : false); };
    const overlay = h("div", { class: "overlay", role: "dialog", "aria-modal": "true" },
      h("div", { class: "dialog" },
        h("p", {}, message),
        input ? h("label", {}, input.label, field) : null,
        h("div", { class: "actions" },
          h("button", { type: "button", class: "secondary", on: { click: () => done(false) } }, cancelLabel),
          h("button", { type: "button", class: "danger", "data-confirm": "", on: { click: () => done(true) } }, okLabel))));
    document.body.append(overlay);
    overlay.querySelector("[data-confirm]").focus();
  });
}

export function table(columns, rows, { onRow = null, empty = "" } = {}) {
  const head = h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c.label)));
  const body = rows.map((row) => {
    const tr = h("tr", onRow ? { class: "clickable", tabindex: "0", on: { click: () => onRow(row), keydown: (e) => { if (e.key === "Enter") onRow(row); } } } : {},
      columns.map((c) => h("td", { "data-label": c.label }, c.cell(row))));
    return tr;
  });
  return h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, head), h("tbody", {}, body.length ? body : h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, empty)))));
}

export function fmtNumber(n) {
  if (n === null || n === undefined) return "–";
  return Number(n).toLocaleString();
}

export function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}

// Small SVG charts: a line chart over time and a heatmap. Text goes in as text nodes.
import { h, s } from "./dom.js";

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];

// series: [{ name, values: [number|null] }], labels: x labels (same length)
export function lineChart(title, series, labels, { unit = "" } = {}) {
  const width = 360, height = 140, pad = { l: 44, r: 8, t: 10, b: 20 };
  const all = series.flatMap((one) => one.values.filter((v) => v !== null && v !== undefined));
  const max = Math.max(1, ...all);
  const n = Math.max(2, labels.length);
  const x = (i) => pad.l + (i * (width - pad.l - pad.r)) / (n - 1);
  const y = (v) => height - pad.b - (v / max) * (height - pad.t - pad.b);
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title, class: "chart" },
    s("line", { x1: pad.l, y1: height - pad.b, x2: width - pad.r, y2: height - pad.b, class: "axis" }),
    s("line", { x1: pad.l, y1: pad.t, x2: pad.l, y2: height - pad.b, class: "axis" }),
    s("text", { x: pad.l - 4, y: pad.t + 8, "text-anchor": "end", class: "tick" }, fmt(max) + unit),
    s("text", { x: pad.l - 4, y: height - pad.b, "text-anchor": "end", class: "tick" }, "0"),
    labels.length ? s("text", { x: pad.l, y: height - 4, class: "tick" }, labels[0]) : null,
    labels.length ? s("text", { x: width - pad.r, y: height - 4, "text-anchor": "end", class: "tick" }, labels[labels.length - 1]) : null);
  series.forEach((one, k) => {
    let path = "";
    let pen = false;
    one.values.forEach((v, i) => {
      if (v === null || v === undefined) { pen = false; return; }
      path += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)} `;
      pen = true;
    });
    if (path) svg.append(s("path", { d: path, fill: "none", stroke: COLORS[k % COLORS.length], "stroke-width": 1.6 }));
  });
  const legend = h("div", { class: "legend" }, series.map((one, k) =>
    h("span", {}, h("i", { class: `swatch c${k % COLORS.length}` }), one.name)));
  return h("figure", { class: "card chart-card" }, h("figcaption", {}, title), svg, series.length > 1 ? legend : null);
}

function fmt(v) {
  if (v >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(1)}k`;
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

// matrix: square array of values in [-1, 1]; names: row / column labels
export function heatmap(title, matrix, names) {
  const n = matrix.length;
  const cell = n <= 8 ? 44 : n <= 14 ? 30 : 22;
  const margin = 28;
  const size = margin + n * cell;
  const shown = Math.min(640, Math.round(size * 1.4));
  const svg = s("svg", { viewBox: `0 0 ${size} ${size}`, width: shown, height: shown, role: "img", "aria-label": title, class: "heatmap" });
  names.forEach((name, i) => {
    svg.append(s("text", { x: margin + i * cell + cell / 2, y: margin - 8, "text-anchor": "middle", class: "tick" }, name));
    svg.append(s("text", { x: margin - 6, y: margin + i * cell + cell / 2 + 4, "text-anchor": "end", class: "tick" }, name));
  });
  matrix.forEach((row, i) => row.forEach((value, j) => {
    const rect = s("rect", {
      x: margin + j * cell, y: margin + i * cell, width: cell - 1, height: cell - 1,
      fill: shade(value), "data-i": i, "data-j": j, "data-value": value.toFixed(4),
    }, s("title", {}, `${names[i]} · ${names[j]}: ${value.toFixed(4)}`));
    svg.append(rect);
    if (cell >= 30) {
      svg.append(s("text", { x: margin + j * cell + cell / 2, y: margin + i * cell + cell / 2 + 4, "text-anchor": "middle", class: value > 0.6 ? "cell light" : "cell" }, value.toFixed(2)));
    }
  }));
  return h("figure", { class: "card" }, h("figcaption", {}, title), svg);
}

function shade(value) {
  const v = Math.max(0, Math.min(1, (value + 1) / 2)); // cosine -1..1 -> 0..1
  const light = Math.round(96 - v * 66);
  return `hsl(221, 83%, ${light}%)`;
}

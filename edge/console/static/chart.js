// A point's history as an SVG line chart, drawn here: no charting library, nothing fetched from elsewhere.
const NS = "http://www.w3.org/2000/svg";

function element(name, attributes, text) {
  const node = document.createElementNS(NS, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

export function historyChart(samples, unit) {
  const width = 900, height = 260, left = 60, right = 10, top = 10, bottom = 30;
  const svg = element("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img" });
  const points = samples
    .filter((s) => typeof s.value === "number" && s.quality !== "bad")
    .map((s) => [Date.parse(s.time), s.value]);
  if (points.length === 0) {
    svg.append(element("text", { x: left, y: height / 2 }, "no numeric samples in this range"));
    return svg;
  }
  const times = points.map((p) => p[0]), values = points.map((p) => p[1]);
  let [t0, t1] = [Math.min(...times), Math.max(...times)];
  let [v0, v1] = [Math.min(...values), Math.max(...values)];
  if (t0 === t1) t1 = t0 + 1000;
  if (v0 === v1) { v0 -= 1; v1 += 1; }
  const x = (t) => left + ((t - t0) / (t1 - t0)) * (width - left - right);
  const y = (v) => top + (1 - (v - v0) / (v1 - v0)) * (height - top - bottom);
  for (const fraction of [0, 0.5, 1]) {
    const value = v0 + fraction * (v1 - v0);
    svg.append(element("line", { x1: left, x2: width - right, y1: y(value), y2: y(value) }));
    svg.append(element("text", { x: 4, y: y(value) + 4 }, `${+value.toPrecision(4)} ${unit || ""}`));
  }
  for (const [t, anchor] of [[t0, "start"], [t1, "end"]]) {
    svg.append(element("text", { x: x(t), y: height - 8, "text-anchor": anchor }, new Date(t).toLocaleTimeString()));
  }
  const d = points.map(([t, v], i) => `${i ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`).join("");
  svg.append(element("path", { d, "data-samples": String(points.length) }));
  return svg;
}

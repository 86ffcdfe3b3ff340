/**
 * A small line chart in plain SVG (no dependency), for the traffic page.
 *
 * - Axes with values: the y axis from 0 to a rounded maximum (three labelled lines), the x
 *   axis with clock times; the current value as text beside the title.
 * - A gap stays a gap: a missing point (null) or two points further apart than 1.5 intervals
 *   break the line; nothing is interpolated.
 * - Accessible: the SVG is role="img" with a summary (now, lowest, highest) as its label, and
 *   a "Data table" disclosure lists every point (filled only while it is open).
 * - No layout thrash: the SVG has a fixed viewBox and scales with CSS; an update only sets
 *   attributes and text, batched into one animation frame, and never reads layout.
 * - Colours come from CSS (classes styled with the page's variables), so dark mode follows.
 */

const SVG = "http://www.w3.org/2000/svg";
const W = 360;
const H = 150;
const PAD = { left: 30, right: 6, top: 8, bottom: 20 };

let counter = 0;

function svg(name, attributes = {}) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  return node;
}

function html(name, attributes = {}, text) {
  const node = document.createElement(name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

/** A round number at or above `value` (1, 2, 5 times a power of ten), at least `floor`. */
export function niceMax(value, floor = 1) {
  const v = Math.max(value, floor);
  const power = 10 ** Math.floor(Math.log10(v));
  for (const step of [1, 2, 5, 10]) if (step * power >= v) return step * power;
  return 10 * power;
}

export function clock(t) {
  const date = new Date(t * 1000);
  return `${String(date.getHours()).padStart(2, "0")}:${String(date.getMinutes()).padStart(2, "0")}`;
}

function clockSeconds(t) {
  const date = new Date(t * 1000);
  return `${clock(t)}:${String(date.getSeconds()).padStart(2, "0")}`;
}

function format(value, decimals) {
  if (value === null || value === undefined) return "—";
  return decimals ? value.toFixed(decimals) : String(Math.round(value));
}

/** The path of `points` ([{t, v}], oldest first): a new segment after every gap. */
export function linePath(points, { from, to, top, interval }) {
  const x = (t) => PAD.left + ((t - from) / Math.max(1e-9, to - from)) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - (v / top) * (H - PAD.top - PAD.bottom);
  let d = "";
  let previous = null;
  for (const point of points) {
    if (point.v === null || point.v === undefined || point.t < from) {
      previous = null;
      continue;
    }
    const joined = previous !== null && point.t - previous.t <= interval * 1.5;
    const px = x(point.t).toFixed(1);
    const py = y(point.v).toFixed(1);
    // A lone point is drawn as a dot (a zero-length segment with round caps).
    d += joined ? ` L${px} ${py}` : ` M${px} ${py} h0`;
    previous = point;
  }
  return d.trim();
}

export class LineChart {
  /**
   * @param {HTMLElement} parent where the chart's <figure> goes
   * @param {{title: string, unit?: string, decimals?: number, key?: string}} options
   */
  constructor(parent, { title, unit = "", decimals = 0, key = "" }) {
    const id = `chart-${++counter}`;
    this.unit = unit;
    this.decimals = decimals;
    this.title = title;
    this.figure = html("figure", { class: "chart", "data-chart": key });
    const caption = html("figcaption", { class: "chart-head" });
    caption.append(html("span", { class: "chart-title", id: `${id}-title` }, title));
    this.now = html("span", { class: "chart-now", "data-role": "now" }, "—");
    caption.append(this.now);
    this.figure.append(caption);

    this.svg = svg("svg", {
      viewBox: `0 0 ${W} ${H}`,
      role: "img",
      "aria-labelledby": `${id}-title ${id}-summary`,
      class: "chart-svg",
    });
    this.grid = svg("g", { class: "chart-grid" });
    this.xAxis = svg("g", { class: "chart-axis" });
    this.limitLine = svg("line", { class: "chart-limit", x1: PAD.left, x2: W - PAD.right, visibility: "hidden" });
    this.line = svg("path", { class: "chart-line", d: "" });
    this.svg.append(this.grid, this.xAxis, this.limitLine, this.line);
    this.figure.append(this.svg);

    this.summary = html("p", { class: "chart-summary sr-only", id: `${id}-summary` });
    this.note = html("p", { class: "chart-note", hidden: "" });
    this.figure.append(this.summary, this.note);

    this.details = html("details", { class: "chart-table" });
    this.details.append(html("summary", {}, "Data table"));
    this.table = html("table");
    this.table.append(html("caption", { class: "sr-only" }, `${title}, oldest first`));
    const head = html("thead");
    const row = html("tr");
    row.append(html("th", { scope: "col" }, "Time"), html("th", { scope: "col" }, title));
    head.append(row);
    this.tbody = html("tbody");
    this.table.append(head, this.tbody);
    this.details.append(this.table);
    this.details.addEventListener("toggle", () => this.details.open && this.fillTable());
    this.figure.append(this.details);
    parent.append(this.figure);

    this.data = { points: [], from: 0, to: 1, interval: 10, note: null, limit: null };
    this.frame = 0;
  }

  /**
   * Draw `points` ([{t, v}], oldest first) over [from, to] (seconds since 1970). `note`
   * replaces the current value when the series is unavailable ("PBX link not configured");
   * `limit` draws a dashed line (a trunk's max_channels).
   */
  update(points, { from, to, interval, note = null, limit = null, suffix = "" }) {
    this.data = { points, from, to, interval, note, limit, suffix };
    if (!this.frame) this.frame = requestAnimationFrame(() => this.draw());
  }

  draw() {
    this.frame = 0;
    const { points, from, to, interval, note, limit, suffix } = this.data;
    const values = points.filter((p) => p.v !== null && p.v !== undefined && p.t >= from).map((p) => p.v);
    const highest = values.length ? Math.max(...values) : 0;
    const top = niceMax(Math.max(highest, limit || 0), this.decimals ? 1 : 2);

    // The y axis: 0, half and the top, labelled.
    this.grid.replaceChildren();
    for (const value of [0, top / 2, top]) {
      const y = H - PAD.bottom - (value / top) * (H - PAD.top - PAD.bottom);
      this.grid.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y }));
      const label = svg("text", { x: PAD.left - 5, y: y + 4, "text-anchor": "end" });
      label.textContent = Number.isInteger(value) ? String(value) : value.toFixed(1);
      this.grid.append(label);
    }
    // The x axis: four clock times across the hour.
    this.xAxis.replaceChildren();
    for (let i = 0; i <= 4; i++) {
      const t = from + ((to - from) * i) / 4;
      const x = PAD.left + (i / 4) * (W - PAD.left - PAD.right);
      const label = svg("text", { x, y: H - 5, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" });
      label.textContent = clock(t);
      this.xAxis.append(label);
    }
    if (limit) {
      const y = H - PAD.bottom - (limit / top) * (H - PAD.top - PAD.bottom);
      this.limitLine.setAttribute("y1", y);
      this.limitLine.setAttribute("y2", y);
      this.limitLine.setAttribute("visibility", "visible");
    } else {
      this.limitLine.setAttribute("visibility", "hidden");
    }
    this.line.setAttribute("d", linePath(points, { from, to, top, interval }));

    const last = points.length ? points[points.length - 1] : null;
    const current = last && last.v !== null && last.v !== undefined ? last.v : null;
    const unit = this.unit ? ` ${this.unit}` : "";
    this.now.textContent = current === null ? "—" : `${format(current, this.decimals)}${unit}${suffix}`;
    this.figure.dataset.current = current === null ? "" : String(current);
    this.figure.dataset.points = String(values.length);
    this.note.hidden = !note;
    this.note.textContent = note || "";
    const lowest = values.length ? Math.min(...values) : null;
    this.summary.textContent = values.length
      ? `Over the last hour: now ${format(current, this.decimals)}${unit}, lowest ${format(lowest, this.decimals)}, ` +
        `highest ${format(highest, this.decimals)}${limit ? `, limit ${limit}` : ""}; ${values.length} samples.`
      : `No samples yet${note ? `: ${note}` : ""}.`;
    if (this.details.open) this.fillTable();
  }

  fillTable() {
    const rows = this.data.points
      .filter((p) => p.t >= this.data.from)
      .map((p) => {
        const row = html("tr", { "data-t": String(p.t) });
        row.append(html("td", {}, clockSeconds(p.t)), html("td", {}, format(p.v, this.decimals)));
        return row;
      });
    this.tbody.replaceChildren(...rows);
  }

  remove() {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.figure.remove();
  }
}

// Wallboard chart: today's calls per interval from GET /api/reports/intervals as an inline SVG —
// stacked bars (answered, abandoned) and a service-level line on a 0–100 % right axis. Each bar has a
// <title> (read by screen readers, shown on hover). Refreshed every minute and when a call ends.
import { api, el, showError } from "/static/common.js";

const NS = "http://www.w3.org/2000/svg";
const W = 720, H = 240, PAD = { left: 36, right: 40, top: 12, bottom: 28 };

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) node.setAttribute(k, String(v));
  for (const c of children) node.append(typeof c === "string" ? document.createTextNode(c) : c);
  return node;
}

export function renderIntervals(container, report) {
  const slots = report.intervals || [];
  const peak = Math.max(1, ...slots.map((s) => s.answered + s.abandoned));
  const plotW = W - PAD.left - PAD.right, plotH = H - PAD.top - PAD.bottom;
  const step = plotW / Math.max(1, slots.length), bar = Math.max(1, step * 0.7);
  const y = (n) => PAD.top + plotH - (n / peak) * plotH;
  const total = slots.reduce((a, s) => a + s.offered, 0);
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: "interval-chart",
    "aria-labelledby": "chart-title" },
  svg("title", { id: "chart-title" }, `Calls per ${report.interval_min} minutes on ${report.date}` +
    `${report.queue ? ` in ${report.queue}` : ""}: ${total} offered`));
  // axes and labels
  chart.append(svg("line", { x1: PAD.left, y1: PAD.top + plotH, x2: W - PAD.right, y2: PAD.top + plotH, class: "axis" }));
  for (const n of [0, Math.ceil(peak / 2), peak]) {
    chart.append(svg("text", { x: PAD.left - 4, y: y(n) + 4, "text-anchor": "end", class: "tick" }, String(n)));
  }
  for (const pct of [0, 50, 100]) {
    chart.append(svg("text", { x: W - PAD.right + 4, y: PAD.top + plotH - (pct / 100) * plotH + 4, class: "tick" }, `${pct}%`));
  }
  const every = Math.max(1, Math.round(slots.length / 12));
  slots.forEach((s, i) => {
    const x = PAD.left + i * step + (step - bar) / 2;
    const g = svg("g", { class: "slot", "data-label": s.label },
      svg("title", {}, `${s.label}: ${s.offered} offered, ${s.answered} answered, ${s.abandoned} abandoned` +
        (s.service_level === null ? "" : `, service level ${Math.round(s.service_level * 100)} %`)));
    if (s.answered) g.append(svg("rect", { x, y: y(s.answered), width: bar, height: y(0) - y(s.answered), class: "answered" }));
    if (s.abandoned) {
      g.append(svg("rect", { x, y: y(s.answered + s.abandoned), width: bar,
        height: y(s.answered) - y(s.answered + s.abandoned), class: "abandoned" }));
    }
    chart.append(g);
    if (i % every === 0) {
      chart.append(svg("text", { x: x + bar / 2, y: H - 8, "text-anchor": "middle", class: "tick" }, s.label));
    }
  });
  const points = slots.map((s, i) => s.service_level === null ? null
    : `${PAD.left + i * step + step / 2},${PAD.top + plotH - s.service_level * plotH}`).filter(Boolean);
  if (points.length) chart.append(svg("polyline", { points: points.join(" "), class: "sl-line" }, svg("title", {}, "service level")));
  const legend = el("p", { class: "legend" },
    el("span", { class: "key answered" }, "answered"), " ", el("span", { class: "key abandoned" }, "abandoned"), " ",
    el("span", { class: "key sl" }, "service level"));
  container.replaceChildren(chart, legend);
}

// How often the chart re-reads the report: every minute, or ?chart_refresh_s=N (at least 1) on the
// wallboard's URL (a wall screen that wants it faster; the page tests use it instead of waiting).
function refreshMs() {
  const asked = Number(new URLSearchParams(location.search).get("chart_refresh_s"));
  return Number.isFinite(asked) && asked >= 1 ? asked * 1000 : 60_000;
}

// Call endings without a socket of our own: wallboard.js keeps #calls (one tr[data-call] per live
// call) current from its live channel, so a row that goes away is a call that ended. A
// `callcenter:live` event on document (detail: the live message) is followed too, should the
// wallboard ever dispatch its messages.
function onCallEnded(callback) {
  document.addEventListener("callcenter:live", (e) => {
    if (e.detail && e.detail.event === "call_ended") callback();
  });
  const body = document.querySelector("#calls tbody");
  if (!body) return;
  const ids = () => new Set([...body.querySelectorAll("tr[data-call]")].map((row) => row.dataset.call));
  let seen = ids();
  new MutationObserver(() => {
    const now = ids();
    const gone = [...seen].some((id) => !now.has(id));
    seen = now;
    if (gone) callback();
  }).observe(body, { childList: true });
}

export class IntervalChart {
  constructor(container, { intervalMin = 30, queue = "", everyMs = refreshMs() } = {}) {
    this.container = container;
    this.intervalMin = intervalMin;
    this.queue = queue;
    this.everyMs = everyMs;
  }

  async refresh() {
    const params = new URLSearchParams({ interval_min: this.intervalMin });
    if (this.queue) params.set("queue", this.queue);
    const report = await api("GET", `/api/reports/intervals?${params}`);
    renderIntervals(this.container, report);
  }

  start() {
    const run = () => this.refresh().then(() => showError("chart-error", null), (e) => showError("chart-error", e));
    run();
    setInterval(run, this.everyMs);
    // The ended call's record is written a moment after the event (the store writes in batches):
    // read once shortly after, and once more a few seconds later. A burst of endings is one refresh.
    let pending = null;
    onCallEnded(() => {
      if (pending) return;
      pending = setTimeout(() => {
        run();
        pending = setTimeout(() => { pending = null; run(); }, 4000);
      }, 1000);
    });
  }
}

function main() {
  const container = document.getElementById("interval-chart");
  if (!container) return;
  const chart = new IntervalChart(container);
  const queue = document.getElementById("chart-queue");
  if (queue) queue.addEventListener("change", () => { chart.queue = queue.value; chart.refresh(); });
  chart.start();
}

main();

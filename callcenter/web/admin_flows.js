// Admin console, Flows: edit an IVR flow's YAML (line numbers, highlighting), check it (errors marked at their
// line), diff it against the live version, publish it, and roll back to any stored version.
import { api, el, showError } from "/static/common.js";
import { highlightYaml, lineDiff } from "/static/yaml.js";

const $ = (id) => document.getElementById(id);
const source = $("source");
const current = { id: null, live: null, errors: [] }; // live: the live version's JSON (with yaml) or null

function status(text, kind = "") {
  $("status").textContent = text;
  $("status").className = `status ${kind}`;
}

// -- the editor: a transparent textarea over a highlighted <pre>, a gutter of line numbers ----------

function errorLines() {
  const lines = new Map();
  for (const e of current.errors) {
    if (e.line) lines.set(e.line, [...(lines.get(e.line) || []), e.message || e.text]);
  }
  return lines;
}

function paint() {
  const text = source.value;
  const count = text.split("\n").length;
  const marks = errorLines();
  $("gutter").replaceChildren(...Array.from({ length: count }, (_, i) => {
    const n = i + 1;
    const messages = marks.get(n);
    return el("div", { class: messages ? "ln err" : "ln", dataset: { line: n }, title: messages ? messages.join("\n") : null }, n);
  }));
  $("highlight").replaceChildren(...highlightYaml(text, new Set(marks.keys())));
  syncScroll();
}

function syncScroll() {
  $("highlight").scrollTop = source.scrollTop;
  $("highlight").scrollLeft = source.scrollLeft;
  $("gutter").scrollTop = source.scrollTop;
}

source.addEventListener("input", () => {
  if (current.errors.length) current.errors = []; // stale once edited; Check again to see them
  $("errors").replaceChildren();
  paint();
});
source.addEventListener("scroll", syncScroll);
source.addEventListener("keydown", (event) => {
  if (event.key === "Tab") { // YAML indents with spaces
    event.preventDefault();
    const { selectionStart: a, selectionEnd: b } = source;
    source.setRangeText("  ", a, b, "end");
    source.dispatchEvent(new Event("input"));
  }
});

function goToLine(line, column) {
  const lines = source.value.split("\n");
  let offset = 0;
  for (let i = 0; i < line - 1 && i < lines.length; i++) offset += lines[i].length + 1;
  offset += Math.max(0, (column || 1) - 1);
  source.focus();
  source.setSelectionRange(offset, offset);
  const lineHeight = parseFloat(getComputedStyle(source).lineHeight) || 18;
  source.scrollTop = Math.max(0, (line - 4) * lineHeight);
  syncScroll();
}

function showErrors(errors) {
  current.errors = errors || [];
  $("errors").replaceChildren(...current.errors.map((e) => el("li", {
    class: "flow-error",
    dataset: { line: e.line ?? "" },
    onclick: () => e.line && goToLine(e.line, e.column),
  }, e.line ? el("span", { class: "where" }, `line ${e.line}${e.column ? `, column ${e.column}` : ""}`) : null,
  e.line ? ": " : "", e.message || e.text)));
  paint();
}

// -- flows, versions ------------------------------------------------------------------------------

async function loadList() {
  const flows = await api("GET", "/api/flows");
  $("flow-list").replaceChildren(...flows.map((f) => el("li", {},
    el("button", { type: "button", class: f.id === current.id ? "flow current" : "flow", dataset: { flow: f.id },
      onclick: () => openFlow(f.id) }, f.id, el("span", { class: "muted" }, ` v${f.version}`)))));
  return flows;
}

async function loadHistory() {
  const tbody = $("history").tBodies[0];
  if (!current.live) {
    tbody.replaceChildren();
    return;
  }
  const versions = await api("GET", `/api/flows/${encodeURIComponent(current.id)}/versions`);
  tbody.replaceChildren(...versions.slice().reverse().map((v) => {
    const isLive = v.version === current.live.version;
    return el("tr", { dataset: { version: v.version } },
      el("td", {}, `v${v.version}`, isLive ? el("span", { class: "badge" }, " live") : null),
      el("td", {}, v.author || ""),
      el("td", {}, new Date(v.created_at).toLocaleString()),
      el("td", {}, v.source || ""),
      el("td", {}, v.message || (v.rolled_back_from ? `rollback to v${v.rolled_back_from}` : "")),
      el("td", { class: "actions" },
        el("button", { type: "button", class: "load", onclick: () => loadVersion(v.version) }, "Load"),
        isLive ? null : el("button", { type: "button", class: "rollback", onclick: () => rollback(v.version) }, "Roll back")));
  }));
}

// Each open or load takes a ticket; an answer that comes back after a newer one began is dropped, so a
// slow load (the first flow, opened as the page starts) never overwrites what the admin opened and
// typed meanwhile.
let editorTicket = 0;

async function openFlow(id, { fresh = false } = {}) {
  const ticket = ++editorTicket;
  let live = null;
  if (!fresh) {
    live = await api("GET", `/api/flows/${encodeURIComponent(id)}`);
    if (ticket !== editorTicket) return;
  }
  current.id = id;
  current.errors = [];
  current.live = live;
  $("errors").replaceChildren();
  $("diff-view").hidden = true;
  status("");
  source.value = live ? live.yaml
    : `id: ${id}\nlanguage: en-US\nstart: hello\nnodes:\n  hello:\n    type: hangup\n    prompt: Hello.\n`;
  $("flow-title").textContent = id;
  $("flow-live").textContent = current.live ? `live: v${current.live.version} by ${current.live.author || "?"}` : "not published yet";
  paint();
  await Promise.all([loadList(), loadHistory()]);
}

async function loadVersion(version) {
  const ticket = ++editorTicket;
  const v = await api("GET", `/api/flows/${encodeURIComponent(current.id)}/versions/${version}`);
  if (ticket !== editorTicket) return;
  source.value = v.yaml;
  showErrors([]);
  status(`loaded v${version} into the editor (not published)`);
}

async function check() {
  if (!current.id) return;
  status("checking…");
  const result = await api("POST", `/api/flows/${encodeURIComponent(current.id)}/check`, source.value);
  showErrors(result.errors);
  status(result.ok ? "no errors" : `${result.errors.length} error(s)`, result.ok ? "ok" : "bad");
  const first = result.errors.find((e) => e.line);
  if (first) goToLine(first.line, first.column); // bring the first error into view
}

function diff() {
  if (!current.id) return;
  const view = $("diff-view");
  const before = current.live ? current.live.yaml : "";
  const lines = lineDiff(before, source.value);
  view.replaceChildren(...lines.map(([op, text]) =>
    el("div", { class: op === "+" ? "add" : op === "-" ? "del" : "same" }, `${op} ${text}`)));
  if (!lines.some(([op]) => op !== " ")) view.replaceChildren(el("div", { class: "same" }, "no changes against the live version"));
  view.hidden = false;
}

async function publish() {
  if (!current.id) return;
  const message = $("message").value.trim();
  const query = message ? `?message=${encodeURIComponent(message)}` : "";
  status("publishing…");
  try {
    const result = await api("PUT", `/api/flows/${encodeURIComponent(current.id)}${query}`, source.value);
    status(result.changed ? `published v${result.version}` : `unchanged: v${result.version} stays live`, "ok");
    $("message").value = "";
    await openFlow(current.id);
    status(result.changed ? `published v${result.version}` : `unchanged: v${result.version} stays live`, "ok");
  } catch (error) {
    if (error.status === 422 && error.body && error.body.errors) {
      showErrors(error.body.errors);
      status(error.message, "bad");
    } else {
      throw error;
    }
  }
}

async function rollback(version) {
  status(`rolling back to v${version}…`);
  const result = await api("POST", `/api/flows/${encodeURIComponent(current.id)}/rollback`, { version });
  await openFlow(current.id);
  status(`rolled back: v${result.version} (= v${version}) is live`, "ok");
}

function guard(action) {
  return () => action().catch((error) => { status(""); showError("status", error); $("status").className = "status bad"; });
}

$("check").addEventListener("click", guard(check));
$("diff").addEventListener("click", () => diff());
$("publish").addEventListener("click", guard(publish));
$("new-flow").addEventListener("submit", (event) => {
  event.preventDefault();
  guard(() => openFlow($("new-flow-id").value.trim(), { fresh: true }))();
});

// Called once by admin.js: the flow list, then the flow named in ?flow= (or the first).
export async function startFlows() {
  const flows = await loadList();
  const wanted = new URLSearchParams(location.search).get("flow");
  const first = flows.find((f) => f.id === wanted) || flows[0];
  if (first) await openFlow(first.id);
  else paint();
}

export function flowsFailed(error) {
  status(String(error.message || error), "bad");
}

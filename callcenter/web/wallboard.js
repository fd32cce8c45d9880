// Supervisor wallboard: queues (waiting, longest wait, service level, ASA, abandon rate, AHT), agents by
// state with how long, live calls (click one: its transcript, kept current), change an agent's state.
import { api, currentUser, el, fmtDuration, fmtPercent, fmtSeconds, pageReady, renderNav, renderTranscript,
  showError } from "/static/common.js";
import { LiveFeed } from "/static/live.js";

const $ = (id) => document.getElementById(id);
const STATES = [["available", "Available"], ["not_ready", "Not ready"], ["offline", "Offline"]];
const state = { queues: {}, agents: {}, calls: [], fetchedAt: performance.now(), selected: null, me: null,
  monitors: {}, monitorErrors: {}, stopping: {} }; // monitors: call id → mode this supervisor set
// (listen/whisper/barge), kept in step with the live calls' `monitor` (so a reload shows it again);
// stopping: calls whose Stop was clicked, until the server no longer lists their monitor
const MONITOR_MODES = [["listen", "Listen"], ["whisper", "Whisper"], ["barge", "Barge"]];
// A state change being prepared in an agent's row (agent → { state, reason }): the board re-renders on
// every live event, and a supervisor's half-made choice must survive that (it used to snap back, and
// "Set" then sent the old state).
const drafts = {};

function elapsed() {
  return (performance.now() - state.fetchedAt) / 1000;
}

function callLabel(call) {
  return call.caller_name ? `${call.caller_name} <${call.caller}>` : call.caller || call.from || "?";
}

function renderQueues() {
  // Queues named "_..." are the router's own (transfers to a named agent): not for the board.
  const rows = Object.entries(state.queues).filter(([name]) => !name.startsWith("_")).map(([name, q]) => {
    const s = q.stats || {};
    const ended = (s.answered || 0) + (s.abandoned || 0);
    const abandonRate = ended ? s.abandoned / ended : null; // of callers who left the queue either way
    const longest = q.waiting ? q.longest_wait_s + elapsed() : 0;
    return el("tr", { dataset: { queue: name } },
      el("td", {}, name),
      el("td", { class: "num waiting" }, q.waiting),
      el("td", { class: "num longest" }, q.waiting ? fmtDuration(longest) : "–"),
      el("td", { class: "num sl" }, fmtPercent(s.service_level)),
      el("td", { class: "num asa" }, fmtSeconds(s.asa_s)),
      el("td", { class: "num abandoned" }, ended ? `${fmtPercent(abandonRate)} (${s.abandoned})` : "–"),
      el("td", { class: "num aht" }, fmtSeconds(s.aht_s)),
      el("td", { class: "num answered" }, s.answered ?? 0),
      el("td", { class: "num available" }, (q.agents || {}).available ?? 0));
  });
  $("queues").tBodies[0].replaceChildren(...rows);
}

async function changeState(name, select, reason) {
  showError("action-error", null);
  try {
    await api("POST", `/api/agents/${encodeURIComponent(name)}/state`,
      { state: select.value, reason: reason.value.trim() || null });
    delete drafts[name];
    await refresh();
  } catch (error) {
    showError("action-error", `${name}: ${error.message}`);
  }
}

function renderAgents() {
  const counts = {};
  const names = Object.keys(state.agents).sort();
  const rows = names.map((name) => {
    const a = state.agents[name];
    counts[a.state] = (counts[a.state] || 0) + 1;
    const draft = drafts[name] || {};
    const keep = (field) => (e) => { drafts[name] = { ...drafts[name], [field]: e.target.value }; };
    const select = el("select", { "aria-label": `state of ${name}`, class: "state-select", onchange: keep("state") },
      ...STATES.map(([value, label]) => el("option", { value, selected: value === (draft.state ?? a.state) }, label)));
    const reason = el("input", { class: "reason-input", placeholder: "reason", "aria-label": `reason for ${name}`,
      value: draft.reason, oninput: keep("reason") });
    const set = el("button", { type: "button", class: "set-state", onclick: () => changeState(name, select, reason) }, "Set");
    return el("tr", { dataset: { agent: name, state: a.state } },
      el("td", {}, name),
      el("td", {}, el("span", { class: `state ${a.state}` }, a.state.replace("_", " ")),
        a.pending ? el("span", { class: "muted" }, ` → ${a.pending}`) : null),
      el("td", { class: "num duration", dataset: { since: a.since_s } }, fmtDuration(a.since_s + elapsed())),
      el("td", {}, a.reason || ""),
      el("td", {}, a.call_id ? el("a", { href: "#", onclick: (e) => { e.preventDefault(); selectCall(a.call_id); } }, "view") : ""),
      el("td", { class: "actions" }, select, reason, set));
  });
  // Keep the keyboard where it was: the focused control's replacement gets the focus (and caret) back.
  const focused = document.activeElement;
  const row = focused && focused.closest ? focused.closest("#agents tr[data-agent]") : null;
  const caret = row && focused.tagName === "INPUT" ? [focused.selectionStart, focused.selectionEnd] : null;
  $("agents").tBodies[0].replaceChildren(...rows);
  if (row) {
    const again = document.querySelector(`#agents tr[data-agent="${CSS.escape(row.dataset.agent)}"] .${focused.classList[0]}`);
    if (again) {
      again.focus();
      if (caret) again.setSelectionRange(...caret);
    }
  }
  $("agent-summary").textContent = Object.entries(counts).map(([s, n]) => `${s.replace("_", " ")}: ${n}`).join(" · ");
}

// Listen / whisper / barge: the first click rings the supervisor's phone (their linked agent's), later
// clicks switch the mode live, Stop hangs the phone up. Errors show in the row.
async function monitor(callId, mode) {
  const path = `/api/calls/${encodeURIComponent(callId)}/monitor`;
  delete state.monitorErrors[callId];
  try {
    if (mode === null) {
      state.stopping[callId] = true;
      await api("DELETE", path);
      delete state.monitors[callId];
    } else if (state.monitors[callId]) {
      state.monitors[callId] = (await api("POST", `${path}/mode`, { mode })).mode;
    } else {
      state.monitors[callId] = (await api("POST", path, { mode })).mode;
      delete state.stopping[callId];
    }
  } catch (error) {
    if (error.status === 404 && mode !== null && state.monitors[callId]) {
      delete state.monitors[callId]; // it ended meanwhile (phone hung up): start again
      return monitor(callId, mode);
    }
    if (error.status === 404) delete state.monitors[callId];
    state.monitorErrors[callId] = error.message || String(error);
  }
  renderCalls();
}

function monitorCell(call) {
  const id = call.sip_call_id;
  if (!state.me || !["admin", "supervisor"].includes(state.me.role) || !call.agent) return el("td", {});
  const current = state.monitors[id];
  const other = call.monitor && call.monitor.supervisor !== state.me.username ? call.monitor : null;
  const button = (label, mode, cls) => el("button", {
    type: "button", class: `monitor ${cls}${current && current === mode ? " active" : ""}`,
    "aria-pressed": mode !== null ? String(current === mode) : undefined,
    onclick: (e) => { e.stopPropagation(); monitor(id, mode); },
  }, label);
  return el("td", { class: "actions monitor-actions", onclick: (e) => e.stopPropagation() },
    ...MONITOR_MODES.map(([mode, label]) => button(label, mode, mode)),
    button("Stop", null, "stop"),
    other ? el("span", { class: "muted monitored-by" }, `${other.supervisor}: ${other.mode}`) : null,
    el("span", { class: "error monitor-error", role: "alert" }, state.monitorErrors[id] || ""));
}

function renderCalls() {
  const rows = state.calls.map((call) => el("tr", {
    class: `call-row${call.sip_call_id === state.selected ? " selected" : ""}`,
    dataset: { call: call.sip_call_id },
    tabindex: 0,
    onclick: () => selectCall(call.sip_call_id),
    onkeydown: (e) => { if (e.key === "Enter") selectCall(call.sip_call_id); },
  },
  el("td", {}, callLabel(call)),
  el("td", {}, call.called || ""),
  el("td", {}, call.flow ? `${call.flow}: ${(call.ivr_path || []).join(" → ")}` : ""),
  el("td", {}, call.queue || ""),
  el("td", {}, call.agent || ""),
  monitorCell(call)));
  $("calls").tBodies[0].replaceChildren(...rows);
  $("no-calls").hidden = rows.length > 0;
}

async function loadCalls(agents) {
  try {
    return await api("GET", "/api/live-calls");
  } catch (error) {
    if (error.status !== 404) throw error;
  }
  // No list of live calls on this server: the calls agents are on, read one by one.
  const ids = Object.values(agents).map((a) => a.call_id).filter(Boolean);
  const views = await Promise.all(ids.map((id) => api("GET", `/api/calls/${encodeURIComponent(id)}`).catch(() => null)));
  return views.filter((v) => v && v.live);
}

async function renderSelected() {
  const id = state.selected;
  if (!id) return;
  let call;
  try {
    call = await api("GET", `/api/calls/${encodeURIComponent(id)}`);
  } catch (error) {
    if (error.status === 404) return;
    throw error;
  }
  if (state.selected !== id) return;
  $("call-panel").hidden = false;
  $("call-title").textContent = callLabel(call);
  const facts = [["Status", call.live ? "live" : `ended (${call.disposition || "?"})`], ["Called", call.called || call.to],
    ["Flow", call.flow], ["IVR path", (call.ivr_path || []).join(" → ")], ["Queue", call.queue], ["Agent", call.agent],
    ["Digits", call.dtmf]];
  $("call-facts").replaceChildren(...facts.filter(([, v]) => v).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  renderTranscript($("transcript"), call.transcript);
}

function selectCall(id) {
  state.selected = id;
  renderCalls();
  renderSelected().catch((error) => showError("error", error));
}

// The server's word on who monitors each call wins over what this page remembers (a reload, another tab).
function syncMonitors(calls) {
  for (const call of calls) {
    const id = call.sip_call_id, m = call.monitor;
    if (m === undefined) continue; // a call view without the field says nothing
    if (!m || m.state === "ended") {
      delete state.monitors[id];
      delete state.stopping[id];
    } else if (m.supervisor === state.me.username && !state.stopping[id]) {
      state.monitors[id] = m.mode;
    }
  }
}

async function refresh() {
  const [queues, agents] = await Promise.all([api("GET", "/api/queues"), api("GET", "/api/agents/live")]);
  const calls = await loadCalls(agents);
  syncMonitors(calls);
  Object.assign(state, { queues, agents, calls, fetchedAt: performance.now() });
  renderQueues();
  renderAgents();
  renderCalls();
  await renderSelected();
}

function tickDurations() {
  for (const cell of document.querySelectorAll("#agents td.duration")) {
    cell.textContent = fmtDuration(Number(cell.dataset.since) + elapsed());
  }
  for (const row of document.querySelectorAll("#queues tbody tr")) {
    const q = state.queues[row.dataset.queue];
    if (q && q.waiting) row.querySelector(".longest").textContent = fmtDuration(q.longest_wait_s + elapsed());
  }
}

async function main() {
  const me = await currentUser();
  state.me = me;
  renderNav(me, "/wallboard");
  const feed = new LiveFeed({
    refresh: () => refresh().then(() => showError("error", null), (error) => showError("error", error)),
    onSnapshot: (snap) => {
      if (snap.queues) state.queues = snap.queues;
      if (snap.agents) state.agents = snap.agents;
    },
  });
  feed.start();
  setInterval(tickDurations, 1000);
}

main().catch((error) => showError("error", error)).finally(pageReady);

// Agent workspace: set my own state; the call I am on (screen-pop: caller, IVR path, queue, live
// transcript from GET /api/calls/{id}); hold, resume and transfer it.
import { api, currentUser, el, fmtDuration, renderNav, renderTranscript, showError } from "/static/common.js";
import { LiveFeed } from "/static/live.js";

const $ = (id) => document.getElementById(id);
const view = { me: null, agent: null, callId: null, fetchedAt: performance.now() };

function renderState() {
  const a = view.agent;
  $("my-state").textContent = a ? a.state.replace("_", " ") : "–";
  $("my-state").className = `state ${a ? a.state : ""}`;
  $("my-since").textContent = a ? `for ${fmtDuration(a.since_s + (performance.now() - view.fetchedAt) / 1000)}` : "";
  $("pending").textContent = a && a.pending ? `${a.pending.replace("_", " ")} when this call ends` : "";
  for (const button of document.querySelectorAll("#state-buttons button")) {
    button.disabled = !a || button.dataset.state === a.state;
  }
}

async function renderCall() {
  const id = view.callId;
  if (!id) {
    $("call").hidden = true;
    $("no-call").hidden = false;
    return;
  }
  const call = await api("GET", `/api/calls/${encodeURIComponent(id)}`);
  if (view.callId !== id) return;
  $("call").hidden = false;
  $("no-call").hidden = true;
  $("caller").textContent = call.caller_name ? `${call.caller_name} <${call.caller}>` : call.caller || call.from || "?";
  const facts = [["Status", call.live ? "live" : "ended"], ["Called", call.called || call.to], ["Flow", call.flow],
    ["IVR path", (call.ivr_path || []).join(" → ")], ["Queue", call.queue], ["Digits", call.dtmf]];
  $("call-facts").replaceChildren(...facts.filter(([, v]) => v).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  renderTranscript($("transcript"), call.transcript);
  for (const button of document.querySelectorAll("#call-buttons button")) button.disabled = !call.live;
}

async function refresh() {
  if (!view.me.agent) return;
  const agents = await api("GET", "/api/agents/live");
  view.agent = agents[view.me.agent] || null;
  view.fetchedAt = performance.now();
  view.callId = view.agent ? view.agent.call_id : null;
  renderState();
  await renderCall();
}

async function setState(state) {
  showError("state-error", null);
  try {
    const body = { state, reason: state === "not_ready" ? $("reason").value : null };
    await api("POST", `/api/agents/${encodeURIComponent(view.me.agent)}/state`, body);
    await refresh();
  } catch (error) {
    showError("state-error", error);
  }
}

async function callAction(path, body) {
  $("call-status").textContent = "";
  try {
    const result = await api("POST", `/api/calls/${encodeURIComponent(view.callId)}/${path}`, body);
    $("call-status").textContent = result && result.state ? `${path}: ${result.state}` : `${path}: done`;
    await refresh();
  } catch (error) {
    $("call-status").textContent = `${path}: ${error.message}`;
  }
}

async function main() {
  const me = await currentUser();
  view.me = me;
  renderNav(me, "/agent");
  if (!me.agent) {
    $("no-agent").hidden = false;
    $("state-buttons").hidden = true;
    return;
  }
  for (const button of document.querySelectorAll("#state-buttons button")) {
    button.addEventListener("click", () => setState(button.dataset.state));
  }
  $("hold").addEventListener("click", () => callAction("hold"));
  $("resume").addEventListener("click", () => callAction("resume"));
  $("transfer").addEventListener("click", () =>
    callAction("transfer", { to: $("transfer-to").value.trim(), mode: $("transfer-mode").value }));
  $("transfer-complete").addEventListener("click", () => callAction("transfer/complete"));
  $("transfer-cancel").addEventListener("click", () => callAction("transfer/cancel"));
  new LiveFeed({ refresh: () => refresh().then(() => showError("error", null), (e) => showError("error", e)) }).start();
  setInterval(renderState, 1000);
}

main().catch((error) => showError("error", error));

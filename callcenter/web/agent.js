// Agent workspace: set my own state; the call I am on (screen-pop: caller, IVR path, queue, live
// transcript from GET /api/calls/{id}; the customer, their history and open tickets from
// GET /api/calls/{id}/customer); hold, resume and transfer it; a ticket form prefilled from the
// transcript (GET /api/calls/{id}/ticket-draft) saved through the tickets API; wrap-up codes after it.
import { api, currentUser, el, fmtDuration, pageReady, renderNav, renderTranscript, showError }
  from "/static/common.js";
import { renderCustomer } from "/static/customer_panel.js";
import { LiveFeed } from "/static/live.js";

const $ = (id) => document.getElementById(id);
const view = { me: null, agent: null, callId: null, fetchedAt: performance.now(), draftKey: null, codes: [],
  wrappedUp: null, draft: null, saved: null, dirty: false, customerOf: null }; // saved: {callId, number} of the ticket
// saved for the call; dirty: the agent typed in the ticket form since it was last saved (or discarded);
// customerOf: the call the customer panel shows
const DRAFTED = { subject: "ticket-subject", category: "ticket-category", description: "ticket-description" };

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
  if (view.customerOf !== id) await showCustomer(id);
  for (const button of document.querySelectorAll("#call-buttons button")) button.disabled = !call.live;
  $("wrap-up").hidden = call.live || view.wrappedUp === id;
  // The call pops before anyone has spoken: the draft is read again whenever the transcript grew (and
  // once the call ended), so the form follows the conversation.
  const key = `${id} ${(call.transcript || []).length} ${call.live}`;
  if (view.draftKey !== key) await fillTicketForm(id, key);
}

// The customer panel (who, recent contacts, open tickets) is read once per call: it pops while ringing.
async function showCustomer(id) {
  view.customerOf = id;
  $("customer").replaceChildren();
  try {
    const data = await api("GET", `/api/calls/${encodeURIComponent(id)}/customer`);
    if (view.callId === id) renderCustomer($("customer"), data);
  } catch (error) {
    if (view.callId === id) $("customer").replaceChildren(el("p", { class: "muted" }, `Customer: ${error.message}`));
  }
}

// Fields the agent typed in are theirs: a newer draft never overwrites them (a new call resets that).
async function fillTicketForm(id, key) {
  const fresh = !view.draftKey || !view.draftKey.startsWith(`${id} `);
  view.draftKey = key;
  if (fresh) {
    for (const field of Object.values(DRAFTED)) delete $(field).dataset.edited;
    setDirty(false);
    for (const field of ["ticket-status", "wrap-up-status"]) $(field).textContent = "";
    $("wrap-up-note").value = "";
  }
  const draft = await api("GET", `/api/calls/${encodeURIComponent(id)}/ticket-draft`);
  if (view.callId !== id) return;
  view.draft = draft;
  for (const [name, field] of Object.entries(DRAFTED)) {
    if (!$(field).dataset.edited) $(field).value = draft[name] || "";
  }
  $("ticket-customer").textContent = draft.customer ? `Customer: ${draft.customer.name || "#" + draft.customer.id}` : "New caller (no customer yet)";
  if (fresh || $("ticket-update-label").hidden) $("ticket-update").checked = Boolean(draft.open_ticket);
  $("ticket-update-label").hidden = !draft.open_ticket;
  $("ticket-open").textContent = draft.open_ticket ? `#${draft.open_ticket.number} ${draft.open_ticket.subject}` : "";
}

async function saveTicket(event) {
  event.preventDefault();
  const draft = view.draft || {};
  const id = view.callId;
  // Saving again for the same call adds to the ticket saved first instead of opening a second one.
  const saved = view.saved && view.saved.callId === id ? view.saved.number : null;
  const target = saved ?? (draft.open_ticket && $("ticket-update").checked ? draft.open_ticket.number : null);
  try {
    let ticket;
    if (target !== null) {
      const text = `${$("ticket-subject").value}\n\n${$("ticket-description").value}`.trim();
      await api("POST", `/api/tickets/${target}/notes`, { text });
      ticket = { number: target };
    } else {
      ticket = await api("POST", "/api/tickets", {
        subject: $("ticket-subject").value.trim(),
        body: $("ticket-description").value,
        category: $("ticket-category").value.trim() || null,
        customer_id: draft.customer ? draft.customer.id : null,
        call_id: id, // the ticket links this call's conversation (its transcript)
      });
    }
    view.saved = { callId: id, number: ticket.number };
    setDirty(false);
    $("ticket-status").textContent = `Saved ticket #${ticket.number}`;
  } catch (error) {
    $("ticket-status").textContent = `Not saved: ${error.message}`;
  }
}

function setDirty(dirty) {
  view.dirty = dirty;
  $("ticket-discard").hidden = !dirty;
  if (!dirty) $("wrap-up-warning").hidden = true;
}

// Back to the newest draft: what the agent typed since the last save is dropped, on purpose.
function discardTicket() {
  for (const [name, field] of Object.entries(DRAFTED)) {
    delete $(field).dataset.edited;
    $(field).value = (view.draft && view.draft[name]) || "";
  }
  setDirty(false);
  $("ticket-status").textContent = "Changes discarded";
}

async function wrapUp(code) {
  const id = view.callId;
  // Ending wrap-up closes the call panel, and the ticket form with it: typed work is never lost silently.
  if (view.dirty) {
    $("wrap-up-warning").hidden = false;
    return;
  }
  try {
    const note = $("wrap-up-note").value.trim() || null;
    await api("POST", `/api/calls/${encodeURIComponent(id)}/wrap-up`, { code, note });
    view.wrappedUp = id;
    $("wrap-up-status").textContent = `Wrapped up: ${code}`;
    await refresh();
  } catch (error) {
    $("wrap-up-status").textContent = `Wrap-up: ${error.message}`;
  }
}

function renderCodes() {
  $("wrap-up-codes").replaceChildren(...view.codes.map((c) =>
    el("button", { type: "button", dataset: { code: c.code }, onclick: () => wrapUp(c.code) }, c.label)));
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
  $("ticket-form").addEventListener("submit", saveTicket);
  for (const field of Object.values(DRAFTED)) {
    $(field).addEventListener("input", () => { $(field).dataset.edited = "1"; setDirty(true); });
  }
  $("ticket-discard").addEventListener("click", discardTicket);
  view.codes = await api("GET", "/api/wrap-up-codes");
  renderCodes();
  new LiveFeed({ refresh: () => refresh().then(() => showError("error", null), (e) => showError("error", e)) }).start();
  setInterval(renderState, 1000);
}

main().catch((error) => showError("error", error)).finally(pageReady);

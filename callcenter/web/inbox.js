// Agent chat inbox: my conversations (web chat, WeChat), the selected one's messages, a reply box,
// close / hand back / transfer. Live: every /api/live event about my chats re-reads the list and the
// open conversation (live.js falls back to polling). All text goes in through textContent (el()).
import { api, currentUser, el, pageReady, renderNav, showError } from "/static/common.js";
import { renderCustomer } from "/static/customer_panel.js";
import { LiveFeed } from "/static/live.js";

const $ = (id) => document.getElementById(id);
const view = { me: null, selected: null, chats: [], customerOf: null }; // customerOf: the chat the panel shows
const WHO = { caller: "Customer", bot: "Bot", system: "System" };

function label(chat) {
  return `#${chat.id} ${chat.channel} ${chat.name || chat.visitor || chat.address || ""}`.trim();
}

function renderList() {
  const items = view.chats.map((chat) =>
    el("li", { class: chat.id === view.selected ? "selected" : null, dataset: { id: String(chat.id) } },
      el("button", { type: "button", class: "chat-link", onclick: () => select(chat.id) }, label(chat)),
      chat.unread ? el("span", { class: "badge" }, String(chat.unread)) : null,
      el("span", { class: "muted" }, ` ${chat.queue || ""}`)));
  $("chat-list").replaceChildren(...items);
  $("no-chats").hidden = items.length > 0;
  $("chat-count").textContent = items.length ? `(${items.length})` : "";
}

async function renderChat() {
  const id = view.selected;
  if (id === null) {
    $("chat").hidden = true;
    return;
  }
  let chat;
  try {
    chat = await api("GET", `/api/chats/${id}`);
  } catch (error) {
    if (error.status === 404) {
      view.selected = null;
      view.customerOf = null;
      $("chat").hidden = true;
      return;
    }
    throw error;
  }
  if (view.selected !== id) return;
  $("chat").hidden = false;
  $("chat-title").textContent = `#${chat.id}`;
  const facts = [["Channel", chat.channel], ["State", chat.state], ["Queue", chat.queue], ["Agent", chat.agent]];
  $("chat-facts").replaceChildren(...facts.filter(([, v]) => v).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  const atBottom = $("messages").scrollHeight - $("messages").scrollTop - $("messages").clientHeight < 40;
  $("messages").replaceChildren(...chat.messages.map((m) =>
    el("li", { class: `msg ${m.speaker}` }, el("b", {}, `${WHO[m.speaker] || chat.agent || "Agent"}: `), m.text)));
  if (atBottom) $("messages").scrollTop = $("messages").scrollHeight;
  const open = chat.state === "open";
  for (const id of ["send", "close-chat", "hand-back", "transfer", "reply-text"]) $(id).disabled = !open;
  renderSuggestions(chat.suggestions || [], open);
  if (view.customerOf !== id) await showCustomer(id);
}

// The customer panel is read once per chat selected (who the customer is does not change per message).
async function showCustomer(id) {
  view.customerOf = id;
  $("customer").replaceChildren();
  try {
    const data = await api("GET", `/api/chats/${id}/customer`);
    if (view.selected === id) renderCustomer($("customer"), data);
  } catch (error) {
    if (view.selected === id) $("customer").replaceChildren(el("p", { class: "muted" }, `Customer: ${error.message}`));
  }
}

// Agent assist: the KB articles for the customer's latest messages (recomputed by the server each time
// the chat is read, i.e. after every message); "Use" puts the article's answer into the reply box.
function renderSuggestions(suggestions, open) {
  $("suggestions").replaceChildren(...suggestions.map((s) =>
    el("li", { class: "suggestion", dataset: { article: String(s.id) } },
      el("b", {}, s.title), " ", el("span", { class: "muted" }, `${Math.round(s.score * 100)} %`),
      el("p", {}, s.snippet),
      el("button", { type: "button", disabled: !open, onclick: () => {
        const box = $("reply-text");
        box.value = box.value ? `${box.value}\n${s.snippet}` : s.snippet;
        box.focus();
      } }, "Use"))));
  $("no-suggestions").hidden = suggestions.length > 0;
}

async function refresh() {
  const state = $("chat-state").value;
  view.chats = await api("GET", `/api/chats?state=${encodeURIComponent(state)}`);
  if (view.selected === null && state === "open" && view.chats.length) view.selected = view.chats[0].id;
  renderList();
  await renderChat();
}

async function select(id) {
  view.selected = id;
  renderList();
  await renderChat().catch((error) => showError($("error"), error));
}

async function act(what, fn) {
  $("chat-status").textContent = "";
  try {
    await fn();
    $("chat-status").textContent = what;
    await refresh();
  } catch (error) {
    showError($("chat-status"), error);
  }
}

function wire() {
  $("reply-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("reply-text").value.trim();
    if (!text || view.selected === null) return;
    act("Sent.", async () => {
      await api("POST", `/api/chats/${view.selected}/messages`, { text });
      $("reply-text").value = "";
    });
  });
  $("close-chat").addEventListener("click", () =>
    act("Closed.", () => api("POST", `/api/chats/${view.selected}/close`)));
  $("hand-back").addEventListener("click", () =>
    act("Handed back.", () => api("POST", `/api/chats/${view.selected}/handback`)));
  $("transfer").addEventListener("click", () => {
    const to = $("transfer-to").value.trim();
    if (!to) return;
    const body = to.startsWith("agent:") ? { agent: to.slice(6) } : { queue: to };
    act("Transferred.", () => api("POST", `/api/chats/${view.selected}/transfer`, body));
  });
  $("away").addEventListener("click", () => act("Your chats went back to the queues.", () => api("POST", "/api/chats/away")));
  $("chat-state").addEventListener("change", () => {
    view.selected = null;
    refresh().catch((error) => showError($("error"), error));
  });
}

async function main() {
  view.me = await currentUser();
  renderNav(view.me, "/agent/chats");
  wire();
  const feed = new LiveFeed({
    refresh: () => refresh().catch((error) => showError($("error"), error)),
    onEvent: () => {},
    pollMs: 2000,
  });
  feed.start();
}

main().catch((error) => showError($("error"), error)).finally(pageReady);

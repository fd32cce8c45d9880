// callcenter web chat widget: one tag on any site —
//   <script src="https://HOST/chat/widget.js" data-title="Help" async></script>
// A floating button and a panel inside a shadow root (no CSS leaks either way); no framework, no
// CDN. Talks to HOST only: POST /chat/session, then a WebSocket (/chat/ws) or, when that fails, the
// long-poll fallback (/chat/poll + POST /chat/messages). Every text goes in through textContent.
// Identity: the signed visitor token, kept in this site's localStorage and sent as X-Chat-Visitor
// (third-party cookies are often blocked); the server's cookie is the second way.
(() => {
  "use strict";
  const script = document.currentScript;
  if (!script || window.__callcenterChat) return;
  window.__callcenterChat = true;
  const base = new URL(script.src, location.href);
  const origin = base.origin;
  const title = script.dataset.title || "";
  const forcePoll = script.dataset.transport === "poll";
  const storeKey = `callcenter-chat:${origin}`;
  const state = { token: null, last: 0, seen: new Set(), ws: null, polling: false, open: false, online: true,
    typingTimer: null, typingSent: false, wsFailures: 0, started: false };

  // -- DOM (shadow) -----------------------------------------------------------------------------------
  const host = document.createElement("div");
  host.setAttribute("data-callcenter-chat", "");
  const root = host.attachShadow({ mode: "open" });
  const css = `
    :host { all: initial; }
    * { box-sizing: border-box; font-family: system-ui, sans-serif; font-size: 14px; }
    .fab { position: fixed; right: 20px; bottom: 20px; z-index: 2147483646; border: 0; border-radius: 28px;
      padding: 14px 20px; background: #1d4ed8; color: #fff; cursor: pointer; box-shadow: 0 2px 8px #0004; }
    .panel { position: fixed; right: 20px; bottom: 80px; z-index: 2147483647; width: 340px; height: 460px;
      max-height: calc(100vh - 100px); display: flex; flex-direction: column; background: #fff; color: #111;
      border-radius: 10px; box-shadow: 0 4px 16px #0005; overflow: hidden; }
    .panel[hidden], [hidden] { display: none !important; }
    header { background: #1d4ed8; color: #fff; padding: 10px 12px; display: flex; justify-content: space-between; }
    header button { background: none; border: 0; color: #fff; cursor: pointer; font-size: 18px; }
    ol { list-style: none; margin: 0; padding: 10px; flex: 1; overflow-y: auto; }
    li { margin: 6px 0; max-width: 85%; padding: 6px 9px; border-radius: 8px; white-space: pre-wrap;
      word-wrap: break-word; }
    li.visitor { margin-left: auto; background: #dbeafe; }
    li.agent, li.bot { background: #f1f5f9; }
    li.system { background: none; color: #555; font-style: italic; max-width: 100%; text-align: center; }
    li small { display: block; color: #555; font-size: 11px; }
    li img { max-width: 100%; display: block; }
    .chat { display: flex; flex-direction: column; flex: 1; min-height: 0; }
    .typing { padding: 0 12px 4px; color: #555; font-size: 12px; min-height: 16px; }
    form.send { display: flex; gap: 4px; border-top: 1px solid #ddd; padding: 8px; }
    form.send textarea { flex: 1; resize: none; height: 38px; padding: 6px; border: 1px solid #ccc; border-radius: 6px; }
    button.act { border: 0; border-radius: 6px; background: #1d4ed8; color: #fff; padding: 0 10px; cursor: pointer; }
    button.clip { background: #e2e8f0; color: #111; }
    form.offline { padding: 12px; display: flex; flex-direction: column; gap: 6px; overflow-y: auto; }
    form.offline input, form.offline textarea { padding: 6px; border: 1px solid #ccc; border-radius: 6px; }
    .note { color: #b91c1c; padding: 0 12px; font-size: 12px; min-height: 0; }
  `;
  const el = (tag, attrs = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(typeof c === "string" ? document.createTextNode(c) : c);
    return node;
  };
  // A constructed stylesheet is not inline style to the host page's CSP; <style> where unsupported.
  let style = null;
  try {
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(css);
    root.adoptedStyleSheets = [sheet];
  } catch (_) {
    style = el("style");
    style.textContent = css;
  }
  const fab = el("button", { class: "fab", type: "button", part: "button", "aria-label": "Open chat" }, title || "Chat");
  const heading = el("span", {}, title || "Chat");
  const closeBtn = el("button", { type: "button", "aria-label": "Close chat" }, "×");
  const list = el("ol", { class: "messages", "aria-live": "polite" });
  const typing = el("div", { class: "typing" });
  const note = el("div", { class: "note", role: "alert" });
  const input = el("textarea", { name: "text", placeholder: "Type a message…", "aria-label": "Message", maxlength: "10000" });
  const file = el("input", { type: "file", hidden: "", accept: "image/png,image/jpeg,image/gif,image/webp,application/pdf" });
  const clip = el("button", { class: "act clip", type: "button", "aria-label": "Send a file", title: "Send a file" }, "📎");
  const sendBtn = el("button", { class: "act", type: "submit" }, "Send");
  const sendForm = el("form", { class: "send" }, input, clip, file, sendBtn);
  const offName = el("input", { name: "name", placeholder: "Your name", required: "", maxlength: "100" });
  const offEmail = el("input", { name: "email", type: "email", placeholder: "Email", required: "", maxlength: "254" });
  const offMsg = el("textarea", { name: "message", placeholder: "How can we help?", required: "", rows: "5", maxlength: "5000" });
  const offDone = el("p", { class: "done", hidden: "" });
  const offForm = el("form", { class: "offline", hidden: "" },
    el("p", {}, "Nobody is available right now. Leave us a message and we will answer by email."),
    offName, offEmail, offMsg, el("button", { class: "act", type: "submit" }, "Send message"));
  const chatPart = el("div", { class: "chat" }, list, typing, note, sendForm);
  const panel = el("section", { class: "panel", hidden: "", role: "dialog", "aria-label": title || "Chat" },
    el("header", {}, heading, closeBtn), chatPart, offForm, offDone);
  root.append(...(style ? [style] : []), fab, panel);

  // -- HTTP ----------------------------------------------------------------------------------------------
  const headers = (extra = {}) => (state.token ? { "X-Chat-Visitor": state.token, ...extra } : extra);
  async function call(method, path, body, extraHeaders) {
    const init = { method, credentials: "include", headers: headers(extraHeaders) };
    if (body !== undefined) {
      if (body instanceof Blob) init.body = body;
      else { init.body = JSON.stringify(body); init.headers["Content-Type"] = "application/json"; }
    }
    const response = await fetch(new URL(path, origin), init);
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = new Error(typeof data.detail === "string" ? data.detail : `HTTP ${response.status}`);
      error.status = response.status;
      error.retryAfter = Number(response.headers.get("Retry-After") || 0);
      throw error;
    }
    return data;
  }
  const say = (text) => { note.textContent = text || ""; };

  // -- rendering -----------------------------------------------------------------------------------------
  async function showImage(li, url) {
    try {
      const response = await fetch(new URL(url, origin), { credentials: "include", headers: headers() });
      if (!response.ok) return;
      const img = el("img", { alt: "" });
      img.src = URL.createObjectURL(await response.blob());
      li.append(img);
    } catch (_) { /* the name stays shown */ }
  }
  function render(m) {
    if (m.type !== "message" || state.seen.has(m.seq)) return;
    state.seen.add(m.seq);
    state.last = Math.max(state.last, m.seq);
    const li = el("li", { class: m.from, "data-seq": String(m.seq) });
    if (m.from === "agent") li.append(el("small", {}, m.name));
    const body = el("span", { class: "text" });
    body.textContent = m.kind === "image" || m.kind === "file" ? `📎 ${m.text}` : m.text;
    li.append(body);
    if (m.extra && m.extra.url && m.kind === "article") li.append(el("small", {}, m.extra.title || m.extra.url));
    if (m.kind === "image" && m.extra && m.extra.url) showImage(li, m.extra.url);
    list.append(li);
    list.scrollTop = list.scrollHeight;
    if (m.from === "agent") typing.textContent = "";
  }
  function showTyping(on, name) { typing.textContent = on ? `${name || "Agent"} is typing…` : ""; }
  function showMode() {
    const offline = !state.online && state.seen.size === 0;
    chatPart.hidden = offline;
    offForm.hidden = !offline || !offDone.hidden;
  }

  // -- transport -----------------------------------------------------------------------------------------
  function connect() {
    if (forcePoll || state.wsFailures >= 2 || !window.WebSocket) return poll();
    const url = new URL("/chat/ws", origin);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    let opened = false;
    const ws = new WebSocket(url);
    state.ws = ws;
    ws.onopen = () => { opened = true; ws.send(JSON.stringify({ type: "hello", token: state.token, after: state.last })); };
    ws.onmessage = (event) => {
      let frame;
      try { frame = JSON.parse(event.data); } catch (_) { return; }
      if (frame.type === "hello") { state.wsFailures = 0; (frame.messages || []).forEach(render); showTyping(frame.typing); }
      else if (frame.type === "message") render(frame);
      else if (frame.type === "typing") showTyping(frame.typing, frame.name);
      else if (frame.type === "error") say(frame.error === "rate_limited" ? `Slow down: try again in ${frame.retry_after} s.` : "");
    };
    ws.onclose = () => {
      state.ws = null;
      if (!opened) state.wsFailures += 1;
      setTimeout(connect, opened ? 1000 : 2000);
    };
  }
  async function poll() {
    if (state.polling) return;
    state.polling = true;
    while (true) {
      try {
        const data = await call("GET", `/chat/poll?after=${state.last}`);
        data.messages.forEach(render);
        showTyping(data.typing);
      } catch (error) {
        await new Promise((r) => setTimeout(r, error.retryAfter ? error.retryAfter * 1000 : 3000));
      }
    }
  }
  async function send(text) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) {
      state.ws.send(JSON.stringify({ type: "message", text }));
      return;
    }
    const entry = await call("POST", "/chat/messages", { text });
    render(entry);
  }
  function typingChanged(on) {
    if (state.typingSent === on) return;
    state.typingSent = on;
    if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify({ type: "typing", typing: on }));
    else call("POST", "/chat/typing", { typing: on }).catch(() => {});
  }

  // -- start ---------------------------------------------------------------------------------------------
  async function start() {
    if (state.started) return;
    state.started = true;
    try { state.token = localStorage.getItem(storeKey); } catch (_) { state.token = null; }
    try {
      const data = await call("POST", "/chat/session");
      state.token = data.token;
      try { localStorage.setItem(storeKey, data.token); } catch (_) { /* private mode: cookie only */ }
      if (!title) { heading.textContent = data.title; fab.textContent = data.title; }
      state.online = data.online;
      data.messages.forEach(render);
      showMode();
      connect();
    } catch (error) {
      state.started = false;
      say(error.status === 429 ? "Too many requests: try again shortly." : "The chat is not available right now.");
    }
  }
  fab.addEventListener("click", () => {
    state.open = !state.open;
    panel.hidden = !state.open;
    if (state.open) { start(); input.focus(); }
  });
  closeBtn.addEventListener("click", () => { state.open = false; panel.hidden = true; });
  sendForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    say("");
    try {
      await send(text);
      input.value = "";
      typingChanged(false);
    } catch (error) {
      say(error.status === 429 ? `Slow down: try again in ${error.retryAfter || 1} s.` : error.message);
    }
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); sendForm.requestSubmit(); }
  });
  input.addEventListener("input", () => {
    typingChanged(input.value.length > 0);
    clearTimeout(state.typingTimer);
    state.typingTimer = setTimeout(() => typingChanged(false), 4000);
  });
  clip.addEventListener("click", () => file.click());
  file.addEventListener("change", async () => {
    const chosen = file.files && file.files[0];
    file.value = "";
    if (!chosen) return;
    say("");
    try {
      render(await call("POST", "/chat/upload", chosen, { "X-File-Name": encodeURIComponent(chosen.name).slice(0, 200) }));
    } catch (error) {
      say(error.status === 413 ? "That file is too large." : error.status === 415 ? "That kind of file cannot be sent." : error.message);
    }
  });
  offForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    say("");
    try {
      const data = await call("POST", "/chat/offline", { name: offName.value.trim(), email: offEmail.value.trim(), message: offMsg.value.trim() });
      offForm.hidden = true;
      offDone.textContent = data.message;
      offDone.hidden = false;
    } catch (error) {
      say(error.message);
      offForm.append(note);
    }
  });
  (document.body || document.documentElement).append(host);
  let hasToken = false;
  try { hasToken = Boolean(localStorage.getItem(storeKey)); } catch (_) { hasToken = false; }
  if (hasToken) start(); // a returning visitor: history (and live messages) load before the panel opens
})();

// Shared helpers for every page: JSON calls to the API, the signed-in user, navigation, formatting.
// Plain ES modules served as they are: no build step, nothing from a CDN.

export class ApiError extends Error {
  constructor(status, detail, body) {
    super(detail);
    this.status = status;
    this.body = body;
  }
}

function detailText(body, status) {
  if (body && typeof body.detail === "string") return body.detail;
  if (body && Array.isArray(body.detail)) return body.detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
  return `HTTP ${status}`;
}

export function toLogin(why = "login") {
  const next = encodeURIComponent(location.pathname + location.search);
  location.assign(`/?next=${next}&why=${why}`);
}

// api("GET", "/api/queues") → parsed JSON; a string body is sent as text (flow YAML), anything else as
// JSON. 401 sends the browser to the login page unless `noRedirect`.
export async function api(method, path, body, { noRedirect = false } = {}) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (typeof body === "string") {
    init.body = body;
    init.headers["Content-Type"] = "text/plain; charset=utf-8";
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  let data = null;
  const text = await response.text();
  if (text) {
    try { data = JSON.parse(text); } catch { data = text; }
  }
  if (!response.ok) {
    if (response.status === 401 && !noRedirect) toLogin();
    throw new ApiError(response.status, detailText(data, response.status), data);
  }
  return data;
}

// el("td", {class: "x", onclick: f}, "text", child) → an element; strings become text nodes (never HTML).
// Pages start with <body inert aria-busy="true" aria-disabled="true">: until their script has wired the
// controls and loaded what they show, a click or keystroke would be lost (a form's native submit
// reloads the page; a late first load overwrites what was typed). Each page calls this once ready
// (or failed: its error must be readable and the navigation usable).
export function pageReady() {
  for (const name of ["inert", "aria-busy", "aria-disabled"]) document.body.removeAttribute(name);
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export const ROLE_PAGES = {
  admin: [["/admin", "Admin"], ["/admin/prompts", "Prompts"], ["/wallboard", "Wallboard"], ["/agent", "Agent"],
    ["/agent/chats", "Chats"]],
  // Supervisors see and play the prompts (read-only: the page hides upload and delete for them).
  supervisor: [["/wallboard", "Wallboard"], ["/agent", "Agent"], ["/agent/chats", "Chats"],
    ["/admin/prompts", "Prompts"]],
  agent: [["/agent", "Agent"], ["/agent/chats", "Chats"]],
};

export function homeFor(role) {
  return (ROLE_PAGES[role] || [["/", "Login"]])[0][0];
}

export async function logout() {
  try { await api("POST", "/api/auth/logout", undefined, { noRedirect: true }); } finally { location.assign("/"); }
}

// The header: links to the pages this role may open, who is signed in, log out.
export function renderNav(me, current) {
  const nav = document.getElementById("nav");
  nav.replaceChildren(
    el("span", { class: "brand" }, "callcenter"),
    ...(ROLE_PAGES[me.role] || []).map(([href, label]) =>
      el("a", { href, class: href === current ? "current" : null }, label)),
    el("span", { class: "spacer" }),
    el("span", { id: "live-status", class: "live-status" }, ""),
    el("span", { class: "who", id: "who" }, `${me.username} (${me.role})`),
    el("button", { type: "button", id: "logout", onclick: logout }, "Log out"),
  );
}

export async function currentUser() {
  const me = await api("GET", "/api/auth/me");
  if (me.must_change_password) toLogin("login");
  return me;
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "–";
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const mm = String(m).padStart(h ? 2 : 1, "0"), ss = String(r).padStart(2, "0");
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

export function fmtPercent(ratio) {
  return ratio === null || ratio === undefined ? "–" : `${Math.round(ratio * 1000) / 10} %`;
}

export function fmtSeconds(s) {
  return s === null || s === undefined ? "–" : `${Math.round(s)} s`;
}

export function showError(target, error) {
  const node = typeof target === "string" ? document.getElementById(target) : target;
  if (node) node.textContent = error ? String(error.message || error) : "";
}

// A transcript as <ol>: "speaker: text" per utterance, in order.
export function renderTranscript(list, transcript) {
  list.replaceChildren(...(transcript || []).map((u) =>
    el("li", { class: `utt ${u.speaker}` }, el("span", { class: "speaker" }, u.speaker), " ", u.text)));
}

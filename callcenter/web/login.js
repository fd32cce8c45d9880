// Log in with the session cookie; a one-time password must be replaced before anything else; then go to
// the page asked for (?next=) when the role admits it, else the role's home page.
import { api, el, homeFor, logout, ROLE_PAGES, showError } from "/static/common.js";

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
let oneTimePassword = null; // kept in memory only, between the two forms

function allowedNext(role) {
  const next = params.get("next");
  if (!next) return null;
  // Only our own pages, on this origin (never "//elsewhere"): the path must be one of the role's pages.
  const url = new URL(next, location.origin);
  const pages = (ROLE_PAGES[role] || []).map(([href]) => href);
  return url.origin === location.origin && pages.includes(url.pathname) ? url.pathname + url.search : null;
}

function go(me) {
  location.assign(allowedNext(me.role) || homeFor(me.role));
}

function showLogin(message) {
  $("notice").textContent = message || "";
  $("change-form").hidden = true;
  $("choices").hidden = true;
  $("login-form").hidden = false;
  $("username").focus();
}

function showChange() {
  $("login-form").hidden = true;
  $("current-label").hidden = oneTimePassword !== null;
  $("current").required = oneTimePassword === null;
  $("change-form").hidden = false;
  $("notice").textContent = "Your password was a one-time password.";
  $("new-password").focus();
}

// Signed in, but the page asked for needs another role: say so and offer this role's pages.
function showChoices(me) {
  $("login-form").hidden = true;
  $("notice").textContent = `Signed in as ${me.username} (${me.role}): that page needs another role.`;
  $("choices").replaceChildren(
    ...(ROLE_PAGES[me.role] || []).map(([href, label]) => el("a", { href }, label)),
    el("button", { type: "button", onclick: logout }, "Log out"),
  );
  $("choices").hidden = false;
}

async function start() {
  let me = null;
  try {
    me = await api("GET", "/api/auth/me", undefined, { noRedirect: true });
  } catch {
    showLogin(params.get("why") === "login" && params.get("next") ? "Please log in." : "");
    return;
  }
  if (me.must_change_password) showChange();
  else if (params.get("why") === "role" && !allowedNext(me.role)) showChoices(me);
  else go(me);
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  showError("error", null);
  const password = $("password").value;
  try {
    const me = await api("POST", "/api/auth/login", { username: $("username").value.trim(), password },
      { noRedirect: true });
    if (me.must_change_password) {
      oneTimePassword = password;
      showChange();
    } else {
      go(me);
    }
  } catch (error) {
    showError("error", error.status === 401 ? "Wrong username or password." : error);
  }
});

$("change-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  showError("error", null);
  const fresh = $("new-password").value;
  if (fresh !== $("repeat-password").value) {
    showError("error", "The two new passwords differ.");
    return;
  }
  try {
    const me = await api("POST", "/api/auth/password",
      { current: oneTimePassword ?? $("current").value, new: fresh }, { noRedirect: true });
    oneTimePassword = null;
    go(me);
  } catch (error) {
    showError("error", error);
  }
});

start();

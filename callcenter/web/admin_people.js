// Admin console: SIP agents (skills, levels, languages, max chats, SIP password) and web users (role,
// linked agent, disable, reset password → a one-time password shown once, unlock).
import { api, el } from "/static/common.js";
import { clearErrors, fmtLevels, numberOrNull, parseLevels, parseList, prepareForm, showErrors } from "/static/admin_forms.js";

const $ = (id) => document.getElementById(id);

// -- agents ---------------------------------------------------------------------------------------

const agentForm = $("agent-form");
let editingAgent = null;
let agentList = [];

export async function loadAgents(open = null) {
  agentList = await api("GET", "/api/agents");
  $("agent-table").tBodies[0].replaceChildren(...agentList.map((a) => el("tr", { dataset: { agent: a.name } },
    el("td", {}, a.name),
    el("td", {}, a.display_name || ""),
    el("td", {}, fmtLevels(a.skills) || "–"),
    el("td", {}, (a.languages || []).join(", ") || "any"),
    el("td", {}, a.max_chats ?? "–"),
    el("td", {}, a.registered ? "registered" : "not registered"),
    el("td", {}, el("span", { class: `state ${a.state || ""}` }, a.state || "–")),
    el("td", { class: "actions" },
      el("button", { type: "button", class: "edit", onclick: () => editAgent(a) }, "Edit"),
      el("button", { type: "button", class: "delete", onclick: () => deleteAgent(a.name) }, "Delete")))));
  const wanted = open && agentList.find((a) => a.name === open);
  if (wanted) editAgent(wanted);
}

function editAgent(a) {
  editingAgent = a.name;
  clearErrors(agentForm);
  const f = agentForm.elements;
  $("agent-form-title").textContent = `Edit agent ${a.name}`;
  f.name.value = a.name;
  f.name.disabled = true;
  f.display_name.value = a.display_name || "";
  f.password.value = "";
  f.password.placeholder = "unchanged";
  f.skills.value = fmtLevels(a.skills);
  f.languages.value = (a.languages || []).join(", ");
  f.max_chats.value = a.max_chats ?? "";
  f.skills.focus();
}

async function deleteAgent(name) {
  clearErrors(agentForm);
  try {
    await api("DELETE", `/api/agents/${encodeURIComponent(name)}`);
    if (editingAgent === name) agentForm.reset();
    await loadAgents();
  } catch (error) {
    showErrors(agentForm, error);
  }
}

agentForm.addEventListener("reset", () => {
  editingAgent = null;
  agentForm.elements.name.disabled = false;
  agentForm.elements.password.placeholder = "required for a new agent";
  $("agent-form-title").textContent = "New agent";
  clearErrors(agentForm);
});

agentForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const f = agentForm.elements;
  const body = {
    display_name: f.display_name.value.trim() || null,
    skills: parseLevels(f.skills.value),
    languages: parseList(f.languages.value),
    max_chats: numberOrNull(f.max_chats),
  };
  if (f.password.value) body.password = f.password.value;
  try {
    if (editingAgent) {
      await api("PATCH", `/api/agents/${encodeURIComponent(editingAgent)}`, body);
    } else {
      await api("POST", "/api/agents", { name: f.name.value.trim(), ...body });
    }
    agentForm.reset();
    await loadAgents();
  } catch (error) {
    showErrors(agentForm, error, { username: "name" });
  }
});

// -- users ----------------------------------------------------------------------------------------

const userForm = $("user-form");

function showOnce(username, password) {
  const box = $("otp");
  box.replaceChildren("One-time password for ", el("strong", {}, username), ": ", el("code", {}, password),
    " — shown only now; they choose their own at the first login.");
  box.hidden = false;
}

function locked(u) {
  return u.locked_until && new Date(u.locked_until) > new Date();
}

async function userAction(action) {
  clearErrors(userForm);
  try {
    await action();
    await loadUsers();
  } catch (error) {
    showErrors(userForm, error);
  }
}

export async function loadUsers() {
  const users = await api("GET", "/api/users");
  $("user-table").tBodies[0].replaceChildren(...users.map((u) => {
    const name = encodeURIComponent(u.username);
    const role = el("select", { class: "role", "aria-label": `role of ${u.username}`,
      onchange: () => userAction(() => api("PATCH", `/api/users/${name}`, { role: role.value })) },
    ...["agent", "supervisor", "admin"].map((r) => el("option", { selected: r === u.role }, r)));
    const status = [u.disabled ? "disabled" : "active", locked(u) ? "locked" : null,
      u.must_change_password ? "must change password" : null].filter(Boolean).join(", ");
    return el("tr", { dataset: { user: u.username } },
      el("td", {}, u.username),
      el("td", {}, role),
      el("td", {}, u.agent || "–"),
      el("td", {}, u.display_name || ""),
      el("td", { class: "status" }, status),
      el("td", {}, u.last_login_at ? new Date(u.last_login_at).toLocaleString() : "never"),
      el("td", { class: "actions" },
        el("button", { type: "button", class: "toggle",
          onclick: () => userAction(() => api("PATCH", `/api/users/${name}`, { disabled: !u.disabled })) },
        u.disabled ? "Enable" : "Disable"),
        el("button", { type: "button", class: "reset", onclick: () => userAction(async () => {
          const result = await api("POST", `/api/users/${name}/password`, {});
          showOnce(result.username, result.one_time_password);
        }) }, "Reset password"),
        locked(u) ? el("button", { type: "button", class: "unlock",
          onclick: () => userAction(() => api("POST", `/api/users/${name}/unlock`)) }, "Unlock") : null));
  }));
}

userForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const f = userForm.elements;
  const body = {
    username: f.username.value.trim(),
    role: f.role.value,
    agent: f.agent.value.trim() || null,
    display_name: f.display_name.value.trim() || null,
    password: f.password.value || null,
  };
  clearErrors(userForm);
  try {
    const user = await api("POST", "/api/users", body);
    userForm.reset();
    if (user.one_time_password) showOnce(user.username, user.one_time_password);
    else $("otp").hidden = true;
    await loadUsers();
  } catch (error) {
    showErrors(userForm, error);
  }
});

prepareForm(agentForm);
prepareForm(userForm);

// Admin console: queues and business hours (config.yaml ones read-only, console ones editable) and the
// skills matrix (agents × skills, read-only).
import { api, el } from "/static/common.js";
import {
  clearErrors, fmtEscalations, fmtLevels, fmtWeekly, numberOrNull, parseEscalations, parseLevels, parseList,
  parseWeekly, prepareForm, showErrors, sourceBadge,
} from "/static/admin_forms.js";

const $ = (id) => document.getElementById(id);
const seconds = (v) => (v === null || v === undefined ? "–" : `${v} s`);

// -- queues ---------------------------------------------------------------------------------------

const queueForm = $("queue-form");
let editingQueue = null; // name of the console queue in the form, or null for a new one

export async function loadQueues() {
  const queues = await api("GET", "/api/queues/config");
  $("queue-table").tBodies[0].replaceChildren(...queues.map((q) => el("tr", { dataset: { queue: q.name } },
    el("td", {}, q.name, sourceBadge(q.source)),
    el("td", {}, fmtLevels(q.skills) || "any agent"),
    el("td", {}, q.strategy),
    el("td", {}, seconds(q.max_wait_s)),
    el("td", {}, q.max_length ?? "–"),
    el("td", {}, q.overflow || "–"),
    el("td", {}, fmtEscalations(q.escalations).replaceAll("\n", "; ") || "–"),
    el("td", {}, seconds(q.wrap_up_s)),
    el("td", {}, seconds(q.ring_timeout_s)),
    el("td", {}, seconds(q.service_level_s)),
    el("td", { class: "actions" }, q.source === "config" ? el("span", { class: "muted" }, "read-only") : [
      el("button", { type: "button", class: "edit", onclick: () => editQueue(q) }, "Edit"),
      el("button", { type: "button", class: "delete", onclick: () => deleteQueue(q.name) }, "Delete"),
    ]))));
  return queues;
}

function editQueue(q) {
  editingQueue = q.name;
  clearErrors(queueForm);
  const f = queueForm.elements;
  $("queue-form-title").textContent = `Edit queue ${q.name}`;
  f.name.value = q.name;
  f.name.disabled = true;
  f.skills.value = fmtLevels(q.skills);
  f.strategy.value = q.strategy;
  f.max_wait_s.value = q.max_wait_s ?? "";
  f.max_length.value = q.max_length ?? "";
  f.overflow.value = q.overflow || "";
  f.escalations.value = fmtEscalations(q.escalations);
  f.service_level_s.value = q.service_level_s;
  f.wrap_up_s.value = q.wrap_up_s;
  f.ring_timeout_s.value = q.ring_timeout_s;
  f.join_when_empty.checked = q.join_when_empty;
  f.skills.focus();
}

async function deleteQueue(name) {
  clearErrors(queueForm);
  try {
    await api("DELETE", `/api/queues/config/${encodeURIComponent(name)}`);
    if (editingQueue === name) queueForm.reset();
    await loadQueues();
  } catch (error) {
    showErrors(queueForm, error);
  }
}

queueForm.addEventListener("reset", () => {
  editingQueue = null;
  queueForm.elements.name.disabled = false;
  $("queue-form-title").textContent = "New queue";
  clearErrors(queueForm);
});

queueForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const f = queueForm.elements;
  const body = {
    skills: parseLevels(f.skills.value),
    strategy: f.strategy.value,
    max_wait_s: numberOrNull(f.max_wait_s),
    max_length: numberOrNull(f.max_length),
    overflow: f.overflow.value.trim() || null,
    escalations: parseEscalations(f.escalations.value),
    service_level_s: numberOrNull(f.service_level_s) ?? 20,
    wrap_up_s: numberOrNull(f.wrap_up_s) ?? 0,
    ring_timeout_s: numberOrNull(f.ring_timeout_s) ?? 15,
    join_when_empty: f.join_when_empty.checked,
  };
  try {
    if (editingQueue) await api("PATCH", `/api/queues/config/${encodeURIComponent(editingQueue)}`, body);
    else await api("POST", "/api/queues/config", { name: f.name.value.trim(), ...body });
    queueForm.reset();
    await loadQueues();
  } catch (error) {
    showErrors(queueForm, error);
  }
});

// -- business hours -------------------------------------------------------------------------------

const hoursForm = $("hours-form");
let editingHours = null;

export async function loadHours() {
  const schedules = await api("GET", "/api/business-hours");
  $("hours-table").tBodies[0].replaceChildren(...schedules.map((s) => el("tr", { dataset: { schedule: s.name } },
    el("td", {}, s.name, sourceBadge(s.source)),
    el("td", {}, s.timezone),
    el("td", { class: "pre" }, s.weekly ? fmtWeekly(s.weekly).replaceAll("\n", "; ") : "always open"),
    el("td", {}, (s.holidays || []).join(", ") || "–"),
    el("td", { class: "actions" }, s.source === "config" ? el("span", { class: "muted" }, "read-only") : [
      el("button", { type: "button", class: "edit", onclick: () => editHours(s) }, "Edit"),
      el("button", { type: "button", class: "delete", onclick: () => deleteHours(s.name) }, "Delete"),
    ]))));
}

function editHours(s) {
  editingHours = s.name;
  clearErrors(hoursForm);
  const f = hoursForm.elements;
  $("hours-form-title").textContent = `Edit schedule ${s.name}`;
  f.name.value = s.name;
  f.name.disabled = true;
  f.timezone.value = s.timezone;
  f.weekly.value = fmtWeekly(s.weekly);
  f.holidays.value = (s.holidays || []).join(", ");
}

async function deleteHours(name) {
  clearErrors(hoursForm);
  try {
    await api("DELETE", `/api/business-hours/${encodeURIComponent(name)}`);
    if (editingHours === name) hoursForm.reset();
    await loadHours();
  } catch (error) {
    showErrors(hoursForm, error);
  }
}

hoursForm.addEventListener("reset", () => {
  editingHours = null;
  hoursForm.elements.name.disabled = false;
  $("hours-form-title").textContent = "New schedule";
  clearErrors(hoursForm);
});

hoursForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const f = hoursForm.elements;
  const body = {
    timezone: f.timezone.value.trim() || "UTC",
    weekly: parseWeekly(f.weekly.value),
    holidays: parseList(f.holidays.value),
  };
  try {
    if (editingHours) await api("PATCH", `/api/business-hours/${encodeURIComponent(editingHours)}`, body);
    else await api("POST", "/api/business-hours", { name: f.name.value.trim(), ...body });
    hoursForm.reset();
    await loadHours();
  } catch (error) {
    showErrors(hoursForm, error);
  }
});

// -- skills matrix --------------------------------------------------------------------------------

export async function loadSkills() {
  const skills = await api("GET", "/api/skills");
  const names = skills.map((s) => s.skill);
  const agents = new Map(); // agent → {skill: level}
  for (const s of skills) {
    for (const a of s.agents) agents.set(a.name, { ...(agents.get(a.name) || {}), [s.skill]: a.level });
  }
  const table = $("skill-matrix");
  table.tHead.replaceChildren(el("tr", {}, el("th", {}, "Agent"), ...names.map((n) => el("th", {}, n))));
  const needs = el("tr", { class: "needs" }, el("td", {}, "queues need"), ...skills.map((s) =>
    el("td", { class: "level" }, s.queues.map((q) => `${q.name} ≥${q.level}`).join(", ") || "–")));
  table.tBodies[0].replaceChildren(needs, ...[...agents.keys()].sort().map((name) =>
    el("tr", { dataset: { agent: name } },
      el("td", {}, el("a", { href: `#agents/${encodeURIComponent(name)}` }, name)),
      ...names.map((n) => el("td", { class: "level", dataset: { skill: n } }, agents.get(name)[n] ?? "")))));
}

prepareForm(queueForm);
prepareForm(hoursForm);

// Admin console helpers shared by the sections: forms with an error next to each field, the text forms of
// skill levels, escalations and weekly hours, and the "config.yaml" / "console" badge.
import { el } from "/static/common.js";

// Each input of `form` gets a <span class="field-error" data-for=NAME> after it (a grid cell).
export function prepareForm(form) {
  for (const input of form.querySelectorAll("input[name], select[name], textarea[name]")) {
    if (input.type === "checkbox") continue;
    input.after(el("span", { class: "field-error", dataset: { for: input.name } }));
  }
}

export function clearErrors(form) {
  for (const span of form.querySelectorAll(".field-error")) span.textContent = "";
  for (const input of form.querySelectorAll(".invalid")) input.classList.remove("invalid");
  form.querySelector(".form-error").textContent = "";
}

// An API error shown where it belongs: FastAPI's 422 detail [{loc: ["body", field, ...], msg}] next to
// the field it names (`aliases` maps API field names to form names), anything else above the buttons.
export function showErrors(form, error, aliases = {}) {
  clearErrors(form);
  const detail = error && error.body && error.body.detail;
  const general = [];
  if (error && error.status === 422 && Array.isArray(detail)) {
    for (const d of detail) {
      const loc = (d.loc || []).filter((part) => part !== "body");
      const name = loc.length ? aliases[loc[0]] || loc[0] : null;
      const span = name && form.querySelector(`.field-error[data-for="${CSS.escape(String(name))}"]`);
      const text = loc.length > 1 ? `${loc.slice(1).join(".")}: ${d.msg}` : d.msg;
      if (span) {
        span.textContent = span.textContent ? `${span.textContent}; ${text}` : text;
        form.elements[name]?.classList.add("invalid");
      } else {
        general.push(loc.length ? `${loc.join(".")}: ${d.msg}` : d.msg);
      }
    }
  } else {
    general.push(String((error && error.message) || error));
  }
  form.querySelector(".form-error").textContent = general.join("; ");
}

// "sales:2, french" → {sales: 2, french: 1}; a level that is not a number is sent as typed (the API says why).
export function parseLevels(text) {
  const out = {};
  for (const part of String(text || "").split(/[,;]/)) {
    const [name, level] = part.split(":").map((s) => s.trim());
    if (!name) continue;
    out[name] = level === undefined || level === "" ? 1 : /^\d+$/.test(level) ? Number(level) : level;
  }
  return out;
}

export function fmtLevels(levels) {
  return Object.entries(levels || {}).map(([k, v]) => `${k}:${v}`).join(", ");
}

// "60: sales:1, support:2" per line → [{after_s: 60, skills: {...}}]; "(any agent)" or nothing = {}.
export function parseEscalations(text) {
  return String(text || "").split("\n").map((l) => l.trim()).filter(Boolean).map((line) => {
    const i = line.indexOf(":");
    const after = i < 0 ? line : line.slice(0, i).trim();
    const rest = i < 0 ? "" : line.slice(i + 1).replace(/\(any agent\)/, "");
    return { after_s: /^\d+(\.\d+)?$/.test(after) ? Number(after) : after, skills: parseLevels(rest) };
  });
}

export function fmtEscalations(escalations) {
  return (escalations || []).map((e) => `${e.after_s}: ${fmtLevels(e.skills) || "(any agent)"}`).join("\n");
}

// "mon-fri: 09:00-12:00, 13:00-17:00" per line → {"mon-fri": ["09:00-12:00", "13:00-17:00"]}; empty → null.
export function parseWeekly(text) {
  const lines = String(text || "").split("\n").map((l) => l.trim()).filter(Boolean);
  if (!lines.length) return null;
  const out = {};
  for (const line of lines) {
    const i = line.indexOf(":");
    const days = (i < 0 ? line : line.slice(0, i)).trim();
    out[days] = i < 0 ? [] : line.slice(i + 1).split(",").map((s) => s.trim()).filter(Boolean);
  }
  return out;
}

export function fmtWeekly(weekly) {
  if (!weekly) return "";
  return Object.entries(weekly).map(([days, ranges]) => `${days}: ${ranges.join(", ")}`).join("\n");
}

export function parseList(text) {
  return String(text || "").split(/[,\s]+/).map((s) => s.trim()).filter(Boolean);
}

export function numberOrNull(input) {
  const v = input.value.trim();
  return v === "" ? null : Number(v);
}

export function sourceBadge(source) {
  return source === "config"
    ? el("span", { class: "source config", title: "provisioned: change it in config.yaml" }, "config.yaml")
    : el("span", { class: "source console", title: "made in the console" }, "console");
}

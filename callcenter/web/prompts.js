// Admin console: recorded prompts (upload, list, play, delete) and a TTS preview spoken by the IVR's
// own engine, played in the browser. Supervisors see and play; only admins upload and delete.
import { api, currentUser, el, pageReady, renderNav, showError } from "/static/common.js";

const $ = (id) => document.getElementById(id);
const view = { me: null };

function play(player, url) {
  player.hidden = false;
  player.src = url;
  player.play().catch(() => {}); // headless or muted browsers may refuse autoplay: the controls stay
}

async function refresh() {
  const prompts = await api("GET", "/api/prompts");
  const admin = view.me.role === "admin";
  $("no-prompts").hidden = prompts.length > 0;
  $("prompts").querySelector("tbody").replaceChildren(...prompts.map((p) => el("tr", { dataset: { name: p.name } },
    el("td", { class: "name" }, p.name),
    el("td", { class: "duration" }, p.duration_s === null ? "–" : `${p.duration_s.toFixed(1)} s`),
    el("td", { class: "format" }, p.format || p.problem || "?"),
    el("td", {}, el("button", { type: "button", class: "play",
      onclick: () => play($("player"), `/api/prompts/${encodeURIComponent(p.name)}`) }, "▶ Play")),
    el("td", {}, admin ? el("button", { type: "button", class: "delete", onclick: () => remove(p.name) }, "Delete") : ""),
  )));
}

async function remove(name) {
  showError("error", null);
  try {
    await api("DELETE", `/api/prompts/${encodeURIComponent(name)}`);
    await refresh();
  } catch (error) {
    showError("error", error);
  }
}

async function upload(event) {
  event.preventDefault();
  const file = $("prompt-file").files[0];
  if (!file) return;
  const form = new FormData();
  form.append("file", file);
  if ($("prompt-name").value.trim()) form.append("name", $("prompt-name").value.trim());
  const query = $("prompt-overwrite").checked ? "?overwrite=true" : "";
  $("upload-status").textContent = "uploading…";
  const response = await fetch(`/api/prompts${query}`, { method: "POST", body: form, credentials: "same-origin" });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : `HTTP ${response.status}`;
    $("upload-status").textContent = `Upload refused: ${detail}`;
    return;
  }
  $("upload-status").textContent = `Stored ${body.name} (${body.duration_s} s, ${body.format})`;
  $("upload-form").reset();
  await refresh();
}

async function preview(event) {
  event.preventDefault();
  const body = { text: $("preview-text").value, language: $("preview-language").value.trim() || "en-US" };
  if ($("preview-voice").value.trim()) body.voice = $("preview-voice").value.trim();
  $("preview-status").textContent = "synthesising…";
  const response = await fetch("/api/tts/preview", {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  if (!response.ok) {
    const data = await response.json().catch(() => ({}));
    const detail = typeof data.detail === "string" ? data.detail : (data.detail || []).map((d) => d.msg).join("; ");
    $("preview-status").textContent = `Preview failed: ${detail || `HTTP ${response.status}`}`;
    return;
  }
  const blob = await response.blob();
  $("preview-status").textContent = `Ready (${Math.round(blob.size / 1024)} kB)`;
  play($("preview-player"), URL.createObjectURL(blob));
}

async function main() {
  view.me = await currentUser();
  renderNav(view.me, "/admin/prompts");
  $("upload-section").hidden = view.me.role !== "admin";
  $("upload-form").addEventListener("submit", (e) => upload(e).catch((err) => showError("error", err)));
  $("preview-form").addEventListener("submit", (e) => preview(e).catch((err) => showError("error", err)));
  await refresh();
}

main().catch((error) => showError("error", error)).finally(pageReady);

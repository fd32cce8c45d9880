// Admin console: sections behind tabs (#flows, #queues, #hours, #agents, #skills, #users). Each section's
// data is fetched when it is shown, so another admin's changes appear on the next visit.
import { currentUser, pageReady, renderNav } from "/static/common.js";
import { flowsFailed, startFlows } from "/static/admin_flows.js";
import { loadAgents, loadUsers } from "/static/admin_people.js";
import { loadHours, loadQueues, loadSkills } from "/static/admin_queues.js";

const SECTIONS = {
  flows: null, // the editor keeps its own state; loaded once at start
  queues: () => loadQueues(),
  hours: () => loadHours(),
  agents: (arg) => loadAgents(arg),
  skills: () => loadSkills(),
  users: () => loadUsers(),
};

function show() {
  const [tab, arg] = location.hash.replace(/^#/, "").split("/");
  const name = tab in SECTIONS ? tab : "flows";
  for (const panel of document.querySelectorAll("[data-panel]")) panel.hidden = panel.dataset.panel !== name;
  for (const link of document.querySelectorAll("#tabs a")) link.classList.toggle("current", link.dataset.tab === name);
  const load = SECTIONS[name];
  if (load) {
    load(arg ? decodeURIComponent(arg) : null).catch((error) => {
      const form = document.querySelector(`[data-panel="${name}"] .form-error`);
      if (form) form.textContent = String(error.message || error);
    });
  }
}

async function main() {
  const me = await currentUser();
  renderNav(me, "/admin");
  window.addEventListener("hashchange", show);
  show();
  await startFlows();
}

main().catch(flowsFailed).finally(pageReady);

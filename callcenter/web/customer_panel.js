// The screen-pop's "Customer" panel (agent page and chat inbox): who this is, their last contacts and
// their open tickets, from GET /api/calls/{id}/customer or /api/chats/{id}/customer. Every value is
// set as text (el()), never as HTML: names and first lines are what customers typed.
import { el } from "/static/common.js";

const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");

export function renderCustomer(panel, data) {
  const c = data && data.customer;
  if (!c) {
    panel.replaceChildren(el("h3", {}, "Customer"), el("p", { class: "muted" }, "Unknown customer"));
    return;
  }
  const facts = [["Phone", (c.phones || []).join(", ")], ["WeChat", c.wechat_openid], ["External id", c.external_id]];
  const history = (data.history || []).map((h) => el("li", {},
    el("span", { class: "muted" }, `${when(h.started_at)} · ${h.channel}${h.queue ? " · " + h.queue : ""}` +
      `${h.agent ? " · " + h.agent : ""}${h.disposition ? " · " + h.disposition : ""}`),
    h.first_line ? el("q", {}, h.first_line) : null));
  const tickets = (data.open_tickets || []).map((t) => el("li", { class: `priority-${t.priority}` },
    `#${t.number} ${t.subject} `, el("span", { class: "muted" }, `${t.status} · ${t.priority} · ${when(t.updated_at)}`)));
  panel.replaceChildren(
    el("h3", {}, "Customer: ", el("span", { class: "customer-name" }, c.name || `#${c.id}`),
      c.vip_level > 0 ? el("span", { class: "vip" }, ` VIP ${c.vip_level}`) : null),
    el("dl", { class: "facts" }, facts.filter(([, v]) => v).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
    el("h4", {}, "Open tickets"),
    tickets.length ? el("ul", { class: "customer-tickets" }, tickets) : el("p", { class: "muted" }, "None"),
    el("h4", {}, "Recent contacts"),
    history.length ? el("ol", { class: "customer-history" }, history) : el("p", { class: "muted" }, "None"),
  );
}

// Sessions: every bound resource of the cluster, a page at a time (or one
// account's), with where it is connected; end one, or all of an account.

import { call, query, segment } from "./api.js";
import { act, fields, h, pagedTable, rowButton, statusLine, when } from "./ui.js";

export function render(page) {
  const status = statusLine();
  let account = "";

  const list = pagedTable({
    load: (cursor) => call("GET", "/sessions" + query({ account, cursor })),
    empty: "no sessions",
    columns: [
      { title: "Session", cell: (session) => h("span", { class: "mono" }, session.jid) },
      { title: "Node", cell: (session) => h("span", { class: "mono" }, session.node) },
      { title: "Transport", cell: (session) => session.transport },
      { title: "IP address", cell: (session) => session.address },
      { title: "Logged in", cell: (session) => when(session.login_at) },
      { title: "Presence", cell: (session) =>
        session.available ? `available (priority ${session.priority})` : "unavailable" },
      { title: "", class: "actions", cell: (session) => [
        rowButton("End all of account", () => endAccount(session.account), "secondary"),
        rowButton("Kick", () => kick(session.jid)),
      ] },
    ],
  });

  const filter = h("form", { class: "inline", role: "search", onsubmit: (event) => {
    event.preventDefault();
    account = fields(event.target).account;
    list.restart();
  } },
  h("label", {}, "Account", h("input", { name: "account", type: "search", placeholder: "alice@example.org (empty: all)" })),
  h("button", { type: "submit", class: "secondary" }, "Show"),
  h("button", { type: "button", class: "secondary", onclick: () => list.reload() }, "Refresh"));

  function kick(jid) {
    act(status, {
      question: `End the session ${jid}? The client is disconnected.`,
      action: () => call("DELETE", `/sessions/${segment(jid)}`),
      done: () => {
        list.reload();
        return `Ended ${jid}.`;
      },
    });
  }

  function endAccount(jid) {
    act(status, {
      question: `End every session of ${jid}? Its clients are disconnected.`,
      action: () => call("DELETE", `/accounts/${segment(jid)}/sessions`),
      done: (answer) => {
        list.reload();
        return `Ended ${answer.ended.length} session(s) of ${jid}.`;
      },
    });
  }

  page.replaceChildren(h("h1", {}, "Sessions"), status.element, filter, list.element);
  list.restart();
}

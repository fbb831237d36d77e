// Users: search and page through the accounts, create one, reset a
// password, end an account's sessions, delete an account.

import { call, query, segment } from "./api.js";
import { act, fields, h, pagedTable, rowButton, statusLine, when } from "./ui.js";

export function render(page) {
  const status = statusLine();
  let search = "";

  const list = pagedTable({
    load: (after) => call("GET", "/accounts" + query({ search, after })),
    empty: "no accounts match",
    columns: [
      { title: "JID", cell: (account) => h("span", { class: "mono" }, account.jid) },
      { title: "Created", cell: (account) => when(account.created_at) },
      { title: "", class: "actions", cell: (account) => [
        rowButton("Reset password", () => resetPassword(account.jid), "secondary"),
        rowButton("Delete", () => remove(account.jid)),
      ] },
    ],
  });

  const searchForm = h("form", { class: "inline", role: "search", onsubmit: (event) => {
    event.preventDefault();
    search = fields(event.target).search;
    list.restart();
  } },
  h("label", {}, "Search", h("input", { name: "search", type: "search", placeholder: "part of a JID" })),
  h("button", { type: "submit", class: "secondary" }, "Search"));

  const createForm = h("form", { class: "inline", id: "create-user", onsubmit: (event) => {
    event.preventDefault();
    const form = event.target;
    const { jid, password } = fields(form);
    act(status, {
      action: () => call("POST", "/accounts", { jid, password }),
      done: () => {
        form.reset();
        list.reload();
        return `Created ${jid}.`;
      },
    });
  } },
  h("label", {}, "JID", h("input", { name: "jid", required: true, placeholder: "alice@example.org" })),
  h("label", {}, "Password", h("input", { name: "password", type: "password", required: true, autocomplete: "new-password" })),
  h("button", { type: "submit" }, "Create user"));

  function resetPassword(jid) {
    const password = window.prompt(`New password for ${jid} (its sessions stay logged in):`);
    if (!password) return;
    act(status, {
      action: () => call("PUT", `/accounts/${segment(jid)}/password`, { password }),
      done: () => `Password of ${jid} changed.`,
    });
  }

  function remove(jid) {
    act(status, {
      question: `Delete ${jid} and everything stored for it? Its sessions end. This cannot be undone.`,
      action: () => call("DELETE", `/accounts/${segment(jid)}`),
      done: () => {
        list.reload();
        return `Deleted ${jid}.`;
      },
    });
  }

  page.replaceChildren(h("h1", {}, "Users"), status.element,
    h("h2", {}, "New user"), createForm,
    h("h2", {}, "Accounts"), searchForm, list.element);
  list.restart();
}

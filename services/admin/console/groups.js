// Shared roster groups: list, create, describe, delete, and their members.

import { call, query, segment } from "./api.js";
import { act, describe, fields, h, isMissingRoute, notice, pagedTable, rowButton, statusLine } from "./ui.js";

export function render(page) {
  const status = statusLine();
  const members = h("div");

  const list = pagedTable({
    load: (after) => call("GET", "/groups" + query({ after })),
    empty: "no groups",
    onError: (error) => isMissingRoute(error)
      ? notice("info", "This server does not offer shared roster groups: the API has no /groups route.")
      : notice("error", describe(error)),
    columns: [
      { title: "Name", cell: (group) => group.name },
      { title: "Description", cell: (group) => group.description },
      { title: "Members", cell: (group) => group.members },
      { title: "", class: "actions", cell: (group) => [
        rowButton("Members", () => showMembers(group.name), "secondary"),
        rowButton("Edit description", () => editDescription(group), "secondary"),
        rowButton("Delete", () => remove(group.name)),
      ] },
    ],
  });

  const createForm = h("form", { class: "inline", onsubmit: (event) => {
    event.preventDefault();
    const form = event.target;
    const { name, description } = fields(form);
    act(status, {
      action: () => call("POST", "/groups", description ? { name, description } : { name }),
      done: () => {
        form.reset();
        list.reload();
        return `Created the group ${name}.`;
      },
    });
  } },
  h("label", {}, "Name", h("input", { name: "name", required: true })),
  h("label", {}, "Description", h("input", { name: "description" })),
  h("button", { type: "submit" }, "Create group"));

  function editDescription(group) {
    const description = window.prompt(`Description of ${group.name}:`, group.description || "");
    if (description === null) return;
    act(status, {
      action: () => call("PUT", `/groups/${segment(group.name)}`, { description }),
      done: () => {
        list.reload();
        return `Updated ${group.name}.`;
      },
    });
  }

  function remove(name) {
    act(status, {
      question: `Delete the group ${name}? Its members leave it.`,
      action: () => call("DELETE", `/groups/${segment(name)}`),
      done: () => {
        members.replaceChildren();
        list.reload();
        return `Deleted the group ${name}.`;
      },
    });
  }

  function showMembers(name) {
    const path = `/groups/${segment(name)}/members`;
    const memberList = pagedTable({
      load: (after) => call("GET", path + query({ after })),
      empty: "no members",
      columns: [
        { title: "JID", cell: (member) => h("span", { class: "mono" }, member.jid) },
        { title: "", class: "actions", cell: (member) => rowButton("Remove", () => act(status, {
          question: `Remove ${member.jid} from ${name}?`,
          action: () => call("DELETE", `${path}/${segment(member.jid)}`),
          done: () => {
            memberList.reload();
            list.reload();
            return `Removed ${member.jid} from ${name}.`;
          },
        })) },
      ],
    });
    const addForm = h("form", { class: "inline", onsubmit: (event) => {
      event.preventDefault();
      const form = event.target;
      const { jid } = fields(form);
      act(status, {
        action: () => call("PUT", `${path}/${segment(jid)}`),
        done: () => {
          form.reset();
          memberList.reload();
          list.reload();
          return `Added ${jid} to ${name}.`;
        },
      });
    } },
    h("label", {}, "Account", h("input", { name: "jid", required: true, placeholder: "alice@example.org" })),
    h("button", { type: "submit" }, "Add member"));
    members.replaceChildren(h("h2", {}, `Members of ${name}`), addForm, memberList.element);
    memberList.restart();
  }

  page.replaceChildren(h("h1", {}, "Groups"), status.element,
    h("h2", {}, "New group"), createForm, h("h2", {}, "Groups"), list.element, members);
  list.restart();
}

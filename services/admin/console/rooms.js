// Group chat rooms of every chat service: list, look inside one, destroy.

import { call, query, segment } from "./api.js";
import { act, describe, h, isMissingRoute, notice, pagedTable, rowButton, statusLine, table } from "./ui.js";

const FLAGS = ["persistent", "public", "members_only", "password_protected", "moderated"];

export function render(page) {
  const status = statusLine();
  const details = h("div");

  const list = pagedTable({
    load: (after) => call("GET", "/rooms" + query({ after })),
    empty: "no rooms",
    onError: (error) => isMissingRoute(error)
      ? notice("info", "This server does not list group chat rooms: the API has no /rooms route.")
      : notice("error", describe(error)),
    columns: [
      { title: "Room", cell: (room) => h("span", { class: "mono" }, room.jid) },
      { title: "Name", cell: (room) => room.name },
      { title: "Occupants", cell: (room) => room.occupants },
      { title: "Settings", cell: (room) => FLAGS.filter((flag) => room[flag]).join(", ").replaceAll("_", " ") },
      { title: "", class: "actions", cell: (room) => [
        rowButton("Details", () => show(room.jid), "secondary"),
        rowButton("Destroy", () => destroy(room.jid)),
      ] },
    ],
  });

  async function show(jid) {
    let room;
    try {
      room = await call("GET", `/rooms/${segment(jid)}`);
    } catch (error) {
      details.replaceChildren(notice("error", describe(error)));
      return;
    }
    const occupants = table([
      { title: "Nick", cell: (occupant) => occupant.nick },
      { title: "Real JID", cell: (occupant) => h("span", { class: "mono" }, occupant.jid) },
      { title: "Role", cell: (occupant) => occupant.role },
      { title: "Affiliation", cell: (occupant) => occupant.affiliation },
    ], room.occupants, "nobody in the room");
    details.replaceChildren(h("h2", {}, `${room.name || room.jid}`),
      h("p", {}, "Subject: ", room.subject || h("span", { class: "muted" }, "none")), occupants);
  }

  function destroy(jid) {
    if (!window.confirm(`Destroy the room ${jid}? Its occupants are told it is gone.`)) return;
    const reason = window.prompt("Reason told to the occupants (optional):", "") || "";
    act(status, {
      action: () => call("DELETE", `/rooms/${segment(jid)}`, reason ? { reason } : undefined),
      done: () => {
        details.replaceChildren();
        list.reload();
        return `Destroyed ${jid}.`;
      },
    });
  }

  page.replaceChildren(h("h1", {}, "Rooms"), status.element, list.element, details);
  list.restart();
}

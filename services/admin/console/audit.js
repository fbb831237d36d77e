// Audit log: every change made through the API, the console, the ad-hoc
// commands or the command line, newest first.

import { call, query } from "./api.js";
import { h, pagedTable, when } from "./ui.js";

export function render(page) {
  const list = pagedTable({
    load: (before) => call("GET", "/audit" + query({ before })),
    empty: "nothing recorded",
    columns: [
      { title: "When", cell: (entry) => when(entry.at) },
      { title: "Who", cell: (entry) => h("span", { class: "mono" }, entry.actor) },
      { title: "Action", cell: (entry) => h("code", {}, entry.action) },
      { title: "Target", cell: (entry) => h("span", { class: "mono" }, entry.target) },
      { title: "Details", cell: (entry) => entry.detail === "{}" ? "" : h("code", {}, entry.detail) },
    ],
  });
  const refresh = h("button", { type: "button", class: "secondary", onclick: () => list.restart() }, "Newest");
  page.replaceChildren(h("h1", {}, "Audit log"), h("form", { class: "inline" }, refresh), list.element);
  list.restart();
}

// Dashboard: the cluster's live nodes by role, sessions, messages per second
// (GET /cluster), refreshed every few seconds while shown.

import { call } from "./api.js";
import { describe, h, notice, table } from "./ui.js";

const REFRESH_MS = 5000;

const ROLES = [
  ["connection_managers", "Connection-managers"],
  ["routers", "Routers"],
  ["session_replicas", "Session replicas"],
];

export function render(page) {
  const body = h("div");
  page.replaceChildren(h("h1", {}, "Dashboard"), body);

  async function refresh() {
    try {
      showStatus(body, await call("GET", "/cluster"));
    } catch (error) {
      body.replaceChildren(notice("error", describe(error)));
    }
  }
  refresh();
  const timer = setInterval(refresh, REFRESH_MS);
  return () => clearInterval(timer);
}

function card(value, label) {
  return h("div", { class: "card" }, h("div", { class: "value" }, value), h("div", { class: "label" }, label));
}

function showStatus(body, cluster) {
  const cards = h("div", { class: "cards" },
    card(cluster.sessions, "sessions"),
    card(cluster.stanzas_per_second.toFixed(1), "messages per second"),
    ROLES.map(([key, title]) => card(cluster[key].length, title.toLowerCase())));
  const columns = [
    { title: "Node", cell: (node) => h("span", { class: "mono" }, node.id) },
    { title: "gRPC address", cell: (node) => node.grpc_address || "—" },
    { title: "Messages per second", cell: (node) => node.stanzas_per_second.toFixed(1) },
  ];
  const tables = ROLES.map(([key, title]) => [
    h("h2", {}, title),
    table(columns, cluster[key], "none live"),
  ]);
  body.replaceChildren(cards, ...tables.flat(),
    h("p", { class: "muted" }, `Updated ${new Date().toLocaleTimeString()}; refreshed every ${REFRESH_MS / 1000} s.`));
}

// Announcements: a message from the server to every online resource, to
// every account (stored offline for those not online), or to one account.

import { call } from "./api.js";
import { act, fields, h, statusLine } from "./ui.js";

const AUDIENCES = {
  online: "everyone online now",
  all: "every account (stored for those offline)",
  one: "one account",
};

export function render(page) {
  const status = statusLine();
  const account = h("input", { name: "account", placeholder: "alice@example.org", disabled: true });

  const audience = h("select", { name: "audience", onchange: () => {
    account.disabled = audience.value !== "one";
    account.required = !account.disabled;
  } }, Object.entries(AUDIENCES).map(([value, label]) => h("option", { value }, label)));

  const form = h("form", { class: "stack", id: "announce", onsubmit: (event) => {
    event.preventDefault();
    const values = fields(form);
    const to = values.audience === "one" ? values.account : values.audience;
    const message = { to, body: values.body };
    if (values.subject) message.subject = values.subject;
    act(status, {
      question: `Send this announcement to ${values.audience === "one" ? to : AUDIENCES[to]}?`,
      action: () => call("POST", "/announcements", message),
      done: (answer) => {
        form.reset();
        account.disabled = true;
        return `Announcement sent: ${answer.recipients} message(s).`;
      },
    });
  } },
  h("label", {}, "To", audience),
  h("label", {}, "Account", account),
  h("label", {}, "Subject (optional)", h("input", { name: "subject" })),
  h("label", {}, "Message", h("textarea", { name: "body", required: true })),
  h("div", {}, h("button", { type: "submit" }, "Send announcement")));

  page.replaceChildren(h("h1", {}, "Announcements"), status.element, form);
}

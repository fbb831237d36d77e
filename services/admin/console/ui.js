// Small DOM helpers shared by the pages. Text always goes in as text nodes,
// never as HTML, so nothing a user or client chose can become markup.

/** An element: `h("button", {class: "danger", onclick: f}, "Delete")`. */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

/** What to show for a failed call: the server's message and its code. */
export function describe(error) {
  return error.code ? `${error.message} (${error.code})` : String(error.message || error);
}

/** A notice box: kind is "ok", "error" or "info". */
export function notice(kind, text) {
  return h("div", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

/** A place for the outcome of actions; `show` replaces what it showed. */
export function statusLine() {
  const element = h("div", { class: "status" });
  return {
    element,
    show(kind, text) {
      element.replaceChildren(notice(kind, text));
    },
    clear() {
      element.replaceChildren();
    },
  };
}

/**
 * Runs `action` (async) after the user confirms `question` (when given),
 * showing `done(result)` or the error in `status`.
 */
export async function act(status, { question, action, done }) {
  if (question && !window.confirm(question)) return;
  try {
    const result = await action();
    status.show("ok", done(result));
  } catch (error) {
    status.show("error", describe(error));
  }
}

/** Whether a list route answered that it does not exist on this server. */
export function isMissingRoute(error) {
  return error.status === 404 && error.code === "not_found";
}

/** A table: columns are `{title, cell(item) -> text or node}`. */
export function table(columns, items, empty) {
  const head = h("tr", {}, columns.map((column) => h("th", {}, column.title)));
  const rows = items.length
    ? items.map((item) => h("tr", {}, columns.map((column) =>
        h("td", { class: column.class }, column.cell(item)))))
    : [h("tr", {}, h("td", { class: "empty", colspan: columns.length }, empty))];
  return h("table", {}, h("thead", {}, head), h("tbody", {}, rows));
}

/**
 * A paged table over a list route: `load(cursor)` answers `{items, next}`.
 * Previous goes back through the cursors already seen. `reload()` shows
 * the current page again (after a change); `restart()` the first page.
 */
export function pagedTable({ load, columns, empty, onError }) {
  const element = h("div");
  const cursors = [""];
  let next = null;

  async function show() {
    const cursor = cursors[cursors.length - 1];
    let page;
    try {
      page = await load(cursor);
    } catch (error) {
      element.replaceChildren(onError ? onError(error) : notice("error", describe(error)));
      return;
    }
    next = page.next;
    const previous = h("button", { class: "secondary", disabled: cursors.length === 1,
      onclick: () => { cursors.pop(); show(); } }, "Previous");
    const following = h("button", { class: "secondary", disabled: next === null,
      onclick: () => { cursors.push(next); show(); } }, "Next");
    const pager = h("div", { class: "pager" }, previous, following, `Page ${cursors.length}`);
    element.replaceChildren(table(columns, page.items, empty), pager);
  }

  return {
    element,
    reload: show,
    restart() {
      cursors.splice(1);
      return show();
    },
  };
}

/** An action button for a table row. */
export function rowButton(label, onclick, kind = "danger") {
  return h("button", { class: kind, type: "button", onclick }, label);
}

/** The values of a form's named fields, trimmed (passwords kept as typed). */
export function fields(form) {
  const values = {};
  for (const [name, value] of new FormData(form)) {
    values[name] = name.includes("password") ? value : value.trim();
  }
  return values;
}

/** A date-time of the API as local time. */
export function when(timestamp) {
  return timestamp ? new Date(timestamp).toLocaleString() : "";
}

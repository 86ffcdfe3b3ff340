/**
 * Presence (live.presence, docs/live-events.md "Presence"): who is online, in how many tabs,
 * and who is editing what.
 *
 * Every page reports itself (setPresence: its page, and the row its edit dialog is open on)
 * and subscribes to the presence topic; the server sends the whole state on subscribe and
 * whenever it changes, with a growing version (a lower one is an older state that crossed a
 * newer one on the way, and is ignored). Shown in the header (on every page), in the
 * dashboard's "Online now" card, as "alice is editing" on list rows, and as a warning in a
 * second editor's dialog (editor.js). Everything is drawn with textContent only.
 */

const PAGE_NAMES = {
  dashboard: "Dashboard",
  extensions: "Extensions",
  trunks: "Trunks",
  calls: "Calls",
  traffic: "Traffic",
  logs: "Logs",
  console: "Console",
};

const listeners = new Set();
let state = { version: -1, users: [] };
let live = null;
const me = document.body.dataset.user;

export function initPresence(connection) {
  live = connection;
  live.setPresence({ page: document.body.dataset.page, editing: null });
  live.subscribe(["presence"]);
  live.onState(({ status }) => {
    // A new connection may be to a restarted server whose versions start again.
    if (status !== "connected") state = { ...state, version: -1 };
  });
  live.onTopic("presence", (frame) => {
    const next = frame.payload;
    if (frame.type !== "presence.state" || !next || typeof next.version !== "number" || !Array.isArray(next.users)) return;
    if (next.version < state.version) return;
    state = next;
    for (const listener of listeners) listener(state);
  });
  onPresence(drawHeader);
  if (document.getElementById("dash-online")) onPresence(drawOnlineCard);
}

/** listener(state) now and on every change. Returns an unsubscribe function. */
export function onPresence(listener) {
  listeners.add(listener);
  listener(state);
  return () => listeners.delete(listener);
}

/** This page's edit dialog is open on `key` ("extension:101"), or closed (null). */
export function setEditing(key) {
  live?.setPresence({ editing: key });
}

/** Other users editing `key`. */
export function editorsOf(key, current = state) {
  return current.users.filter((user) => user.username !== me && user.editing.includes(key)).map((user) => user.username);
}

export function editingText(names) {
  if (!names.length) return "";
  const who = names.length <= 2 ? names.join(" and ") : `${names.slice(0, 2).join(", ")} and ${names.length - 2} more`;
  return `${who} ${names.length === 1 ? "is" : "are"} editing`;
}

function describe(user) {
  const pages = user.pages.map((page) => PAGE_NAMES[page] || page).join(", ");
  const tabs = `${user.tabs} tab${user.tabs === 1 ? "" : "s"}`;
  const editing = user.editing.length ? ` · editing ${user.editing.map((key) => key.replace(":", " ")).join(", ")}` : "";
  return { name: user.username === me ? `${user.username} (you)` : user.username, detail: `${tabs}: ${pages}${editing}` };
}

function drawList(list, users) {
  const items = users.map((user) => {
    const { name, detail } = describe(user);
    const item = document.createElement("li");
    item.dataset.user = user.username;
    const strong = document.createElement("strong");
    strong.textContent = name;
    const span = document.createElement("span");
    span.className = "muted";
    span.textContent = ` ${detail}`;
    item.append(strong, span);
    return item;
  });
  list.replaceChildren(...items);
}

function drawHeader(current) {
  const box = document.getElementById("presence");
  if (!box) return;
  box.hidden = current.version < 0 || !current.users.length;
  const count = current.users.length;
  box.querySelector("[data-part=count]").textContent = `${count} online`;
  box.querySelector("summary").setAttribute("aria-label", `${count} user${count === 1 ? "" : "s"} online: show who`);
  drawList(box.querySelector("[data-part=list]"), current.users);
}

function drawOnlineCard(current) {
  const others = current.users.filter((user) => user.username !== me);
  drawList(document.getElementById("dash-online"), current.users);
  document.getElementById("dash-online-empty").hidden = others.length > 0;
}

/**
 * Mark the rows of a list page that others are editing ("alice is editing"), and keep the
 * marks on rows the page redraws. `kind` is the row's presence key prefix ("extension").
 */
export function markRows(tbody, kind) {
  let current = state;
  const mark = (row) => {
    const names = editorsOf(`${kind}:${row.dataset.liveKey}`, current);
    let badge = row.querySelector(".editing-badge");
    if (!names.length) {
      badge?.remove();
      delete row.dataset.editedBy;
      return;
    }
    if (!badge) {
      badge = document.createElement("span");
      badge.className = "editing-badge";
      badge.setAttribute("role", "status");
      (row.cells[0]?.firstElementChild || row.cells[0] || row).append(badge);
    }
    badge.textContent = editingText(names);
    row.dataset.editedBy = names.join(" ");
  };
  const markAll = () => {
    for (const row of tbody.rows) mark(row);
  };
  onPresence((next) => {
    current = next;
    markAll();
  });
  new MutationObserver((changes) => {
    for (const change of changes) for (const node of change.addedNodes) if (node instanceof HTMLTableRowElement) mark(node);
  }).observe(tbody, { childList: true });
}

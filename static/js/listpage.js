/**
 * A list page (extensions or trunks): the table follows every change live.
 *
 * Rows are rendered by the server (one template include per row). On an event the page
 * fetches just that row's fragment and puts it in its sorted place; a deleted row goes;
 * on resync the page reloads the rows in one request. Search, status filter and column
 * sorting happen here, on the rows already shown.
 *
 * With a PBX link, each row also shows its live registration (an extension's: state, qualify
 * RTT, the phone's IP and user agent; a trunk's: state and last attempt). The page embeds the
 * registrations at its stream position (#pbx-snapshot); the extension.registration or
 * trunk.registration events after it keep them current. The state is kept here by number or
 * name and drawn into every row, also into a row re-fetched from the server.
 */
import { fetchFragment } from "./api.js";
import { follow, formatRtt, formatTime, pageSnapshot } from "./calls.js";
import { initEditor } from "./editor.js";

const EXTENSION_WORDS = { registered: "Registered", unreachable: "Unreachable", unregistered: "Not registered" };
const TRUNK_WORDS = { registered: "Registered", unregistered: "Not registered", rejected: "Rejected", failed: "Failed" };
// Sorting by status: registered first, then trouble, then the rest.
const STATUS_ORDER = { registered: "0", unreachable: "1", rejected: "1", failed: "1", unregistered: "2", none: "3" };

const LIVE_STATE = {
  extension: {
    event: "extension.registration",
    path: "/api/pbx/registrations",
    list: "registrations",
    key: (payload) => payload.extension_number,
    draw: drawExtension,
  },
  trunk: {
    event: "trunk.registration",
    path: "/api/pbx/trunks",
    list: "trunks",
    key: (payload) => payload.name,
    draw: drawTrunk,
  },
};

function part(element, name) {
  return element.querySelector(`[data-part="${name}"]`);
}

function setText(element, text) {
  if (element && element.textContent !== text) element.textContent = text;
}

/** An extension's status cell and the IP under its name, from its registration (or none). */
function drawExtension(row, registration) {
  const cell = row.querySelector(".reg");
  if (!cell) return;
  const state = registration?.state || "unregistered";
  const contacts = registration?.contacts || [];
  // The contact that answers qualify (an RTT) is the live one; otherwise the first.
  const contact = contacts.find((c) => c.rtt_ms !== null && c.rtt_ms !== undefined) || contacts[0];
  cell.dataset.state = state;
  setText(part(cell, "state"), EXTENSION_WORDS[state] || state);
  setText(part(cell, "rtt"), state === "registered" && contact ? formatRtt(contact.rtt_ms) : "");
  const agent = contact?.user_agent || "";
  cell.title = agent ? `User agent: ${agent}` : "";
  const ip = part(row, "ip");
  if (ip) {
    const address = contact?.ip || "";
    const more = contacts.length > 1 ? ` +${contacts.length - 1}` : "";
    setText(ip, address ? `${address}${more}` : "");
    ip.title = [contact?.uri, agent].filter(Boolean).join(" · ");
    ip.hidden = !address;
  }
  row.dataset.reg = state;
  row.dataset.kStatus = STATUS_ORDER[state] ?? "3";
}

/** A trunk's registration cell: its state and last attempt (none: it does not register). */
function drawTrunk(row, registration) {
  const cell = row.querySelector(".reg");
  if (!cell) return;
  const state = registration?.state || "none";
  cell.dataset.state = state;
  setText(part(cell, "state"), registration ? TRUNK_WORDS[state] || state : "No registration");
  const attempt = part(cell, "attempt");
  const at = registration?.last_attempt_at;
  setText(attempt, at ? `Last attempt ${formatTime(at)}` : "");
  attempt.hidden = !at;
  cell.title = registration?.server_uri ? `Registers to ${registration.server_uri}` : "";
  row.dataset.reg = state;
  row.dataset.kStatus = STATUS_ORDER[state] ?? "3";
}

export function init(live) {
  const table = document.getElementById("list");
  const { slug, topic } = table.dataset;
  const tbody = document.getElementById("rows");
  const search = document.getElementById("search");
  const statusFilter = document.getElementById("status-filter");
  const emptyState = document.getElementById("empty");
  const rowCount = document.getElementById("row-count");
  const headers = [...table.querySelectorAll("button.sort")];
  const initial = headers.find((b) => b.getAttribute("aria-sort")) || headers[0];
  let sort = { key: initial.dataset.sortKey, dir: 1 };

  const rowId = (id) => `${topic}-${id}`;
  const keyOf = (row) => row.dataset[`k${sort.key[0].toUpperCase()}${sort.key.slice(1)}`] || "";
  const compare = (a, b) =>
    sort.dir * keyOf(a).localeCompare(keyOf(b), undefined, { numeric: true }) ||
    Number(a.dataset.id) - Number(b.dataset.id);

  function visible(row) {
    const query = search.value.trim().toLowerCase();
    const status = statusFilter.value;
    const enabled = row.dataset.enabled === "true";
    const registered = row.dataset.reg === "registered";
    const shown = {
      all: true,
      enabled,
      disabled: !enabled,
      registered,
      unregistered: !registered,
    }[status];
    return (!query || row.dataset.search.includes(query)) && shown !== false;
  }

  // The live registrations (with a PBX link): kept by number or name, drawn into the rows.
  const liveState = LIVE_STATE[topic];
  const snapshot = liveState ? pageSnapshot() : null;
  let registrations = new Map();
  const drawRow = (row) => {
    if (snapshot) liveState.draw(row, registrations.get(row.dataset.liveKey));
  };
  const rowFor = (key) => [...tbody.rows].find((row) => row.dataset.liveKey === key);

  function refreshView() {
    let shown = 0;
    for (const row of tbody.rows) {
      row.hidden = !visible(row);
      if (!row.hidden) shown += 1;
    }
    rowCount.textContent = tbody.rows.length;
    emptyState.hidden = tbody.rows.length > 0;
    table.dataset.shown = shown;
  }

  function place(row) {
    const before = [...tbody.rows].find((other) => other !== row && compare(row, other) < 0);
    tbody.insertBefore(row, before || null);
  }

  function flash(row) {
    row.classList.remove("flash");
    void row.offsetWidth;
    row.classList.add("flash");
  }

  function parseRow(html) {
    const template = document.createElement("template");
    template.innerHTML = `<table><tbody>${html.trim()}</tbody></table>`;
    return template.content.querySelector("tr");
  }

  // One fetch per row at a time; a change arriving meanwhile fetches again afterwards.
  const inFlight = new Set();
  const again = new Set();
  async function refreshRow(id) {
    if (inFlight.has(id)) {
      again.add(id);
      return;
    }
    inFlight.add(id);
    try {
      const html = await fetchFragment(`/${slug}/${id}/row`);
      const old = document.getElementById(rowId(id));
      if (html === null) {
        old?.remove();
      } else {
        const row = parseRow(html);
        drawRow(row);
        if (old) old.replaceWith(row);
        place(row);
        flash(row);
      }
      refreshView();
    } finally {
      inFlight.delete(id);
      if (again.delete(id)) refreshRow(id);
    }
  }

  function removeRow(id) {
    document.getElementById(rowId(id))?.remove();
    refreshView();
  }

  async function reloadAll() {
    const html = await fetchFragment(`/${slug}/rows`);
    if (html === null) return;
    tbody.innerHTML = html;
    for (const row of tbody.rows) drawRow(row);
    sortRows();
  }

  function sortRows() {
    for (const row of [...tbody.rows].sort(compare)) tbody.append(row);
    for (const header of headers) {
      if (header.dataset.sortKey === sort.key) header.setAttribute("aria-sort", sort.dir > 0 ? "ascending" : "descending");
      else header.removeAttribute("aria-sort");
    }
    refreshView();
  }

  live.on(`${topic}.created`, (frame) => refreshRow(frame.payload.id));
  live.on(`${topic}.updated`, (frame) => refreshRow(frame.payload.id));
  live.on(`${topic}.deleted`, (frame) => removeRow(frame.payload.id));
  live.onResync(reloadAll);

  if (snapshot) {
    follow(live, {
      snapshot,
      path: liveState.path,
      types: [liveState.event],
      load: (document) => {
        registrations = new Map((document[liveState.list] || []).map((item) => [String(liveState.key(item)), item]));
        for (const row of tbody.rows) drawRow(row);
        if (sort.key === "status") sortRows();
        else refreshView();
      },
      apply: (frame) => {
        const key = String(liveState.key(frame.payload));
        registrations.set(key, frame.payload);
        const row = rowFor(key);
        if (!row) return;
        drawRow(row);
        if (sort.key === "status") place(row);
        refreshView();
      },
    });
  }

  search.addEventListener("input", refreshView);
  statusFilter.addEventListener("change", refreshView);
  for (const header of headers) {
    header.addEventListener("click", () => {
      sort = { key: header.dataset.sortKey, dir: sort.key === header.dataset.sortKey ? -sort.dir : 1 };
      sortRows();
    });
  }
  sortRows();

  if (document.getElementById("edit-dialog")) {
    initEditor({ live, slug, topic, tbody, refreshRow });
  }
}

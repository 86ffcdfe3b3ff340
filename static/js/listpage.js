/**
 * A list page (extensions or trunks): one page of rows, paged, sorted, filtered and searched
 * on the server, following every change live.
 *
 * The view (page, page size, sort, status filter, search) lives in the URL (replaceState):
 * a reload or a shared link shows the same view. Search is debounced (80 ms: shorter than the
 * pause between two keys of a fast typist, so one request per pause, not per key) and answered
 * by the server (`/<slug>/rows?<view>`: JSON with the rows' HTML, the pager and the counts).
 *
 * Live events, for the rows in view:
 * - `updated` of a row in view: that row is fetched again (`/<slug>/<id>/row`) and put in
 *   place; if what the filter, search or sort look at changed, the page is fetched again
 *   (the row may leave the view). A burst of more than a couple of rows fetches the page.
 * - `updated` of a row not in view, `created`, `deleted`: the total is adjusted at once and
 *   the page is fetched again, debounced (150 ms, at most 1 s late during a flood): a bulk
 *   change of 10,000 rows gives a few page requests, not 10,000. A deleted row in view goes
 *   at once.
 * - resync: the page is fetched again.
 * Fetches run one at a time (a row's, or the page's), in order, so a later answer is never
 * older than an earlier one; a change arriving meanwhile fetches again afterwards.
 *
 * Stream position: each page of rows carries `seq`, the bus position read before the
 * server's query (the rendered page: `data-rows-seq`). Row events at or below it are
 * already in the rows and are ignored; a row event above it that arrives while the page is
 * being fetched makes the page be fetched once more, so a change committed between the
 * query and the socket's next event is never lost.
 *
 * With a PBX link, each row also shows its live registration (an extension's: state, qualify
 * RTT, the phone's IP and user agent; a trunk's: state and last attempt). The page embeds the
 * registrations at its stream position (#pbx-snapshot); the extension.registration or
 * trunk.registration events after it keep them current and are drawn into every row, also a
 * row fetched again. Filtering and sorting by registration happen on the server (from the
 * link's snapshot and the events after it): a registration change of a phone not in view
 * (or any, when sorted by status) fetches the page again; a phone in view that no longer
 * matches the filter is hidden at once and stays hidden in the table (still following its
 * state) until the page is next fetched. An extension's status opens
 * its diagnostics dialog (diagnostics.js).
 */
import { fetchFragment } from "./api.js";
import { follow, formatRtt, formatTime, pageSnapshot } from "./calls.js";
import { initDiagnostics } from "./diagnostics.js";
import { initEditor } from "./editor.js";
import { markRows } from "./presence.js";

const EXTENSION_WORDS = { registered: "Registered", unreachable: "Unreachable", unregistered: "Not registered" };
const TRUNK_WORDS = { registered: "Registered", unregistered: "Not registered", rejected: "Rejected", failed: "Failed" };
// Sorting by status: registered first, then trouble, then the rest (as rayanpbx/listing.py).
const STATUS_ORDER = { registered: "0", unreachable: "1", rejected: "1", failed: "1", unregistered: "2", none: "3" };
const DEBOUNCE_MS = 150;
const MAX_WAIT_MS = 1000;
const SEARCH_MS = 80; // (200 ms made "a result within 200 ms of the last key" impossible)
const BATCH_ROWS = 2; // more rows in view changed at once: fetch the page instead

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
  // The button's name says what it shows and what it does.
  const rtt = part(cell, "rtt").textContent;
  cell.setAttribute(
    "aria-label",
    `Extension ${row.dataset.liveKey}: ${EXTENSION_WORDS[state] || state}${rtt ? `, ${rtt}` : ""}. Diagnostics`,
  );
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

const DEFAULTS = { page: "1", page_size: "50", status: "all", q: "" };

function parseRows(html) {
  const template = document.createElement("template");
  template.innerHTML = `<table><tbody>${html.trim()}</tbody></table>`;
  return [...template.content.querySelectorAll("tbody > tr")];
}

function flash(row) {
  row.classList.remove("flash");
  void row.offsetWidth;
  row.classList.add("flash");
}

/** Numeric position (seq) or null. */
function toSeq(value) {
  if (value === null || value === undefined || value === "") return null;
  const number = Number(value);
  return Number.isFinite(number) ? number : null;
}

export function init(live) {
  const table = document.getElementById("list");
  const { slug, topic } = table.dataset;
  const tbody = document.getElementById("rows");
  const form = document.getElementById("list-query");
  const search = document.getElementById("search");
  const statusFilter = document.getElementById("status-filter");
  const emptyState = document.getElementById("empty");
  const noMatch = document.getElementById("no-match");
  const rowCount = document.getElementById("row-count");
  const summary = document.getElementById("list-summary");
  const pager = document.getElementById("pager");
  const headers = [...table.querySelectorAll("button.sort")];

  // The view, as the server rendered it (it clamps what it was asked).
  const view = {
    page: pager.querySelector("[data-page-no]")?.dataset.pageNo || "1",
    page_size: form.elements.page_size.value,
    sort: form.elements.sort.value || table.dataset.defaultSort,
    status: statusFilter.value,
    q: search.value,
  };
  let total = Number(rowCount.dataset.total || tbody.rows.length);
  let rowsSeq = toSeq(table.dataset.rowsSeq); // the position the rows shown are valid at

  markRows(tbody, topic); // "alice is editing" on the rows others have open in their edit dialog
  const rowId = (id) => `${topic}-${id}`;
  const sortKey = () => view.sort.replace(/^-/, "");
  const serverHtml = new WeakMap(); // row -> the HTML the server sent (rows are drawn into)
  for (const row of tbody.rows) serverHtml.set(row, row.outerHTML);

  function queryString() {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(view)) {
      if (value !== DEFAULTS[key] && !(key === "sort" && value === table.dataset.defaultSort)) params.set(key, value);
    }
    return params.toString();
  }

  function saveView() {
    const query = queryString();
    history.replaceState(history.state, "", query ? `?${query}` : location.pathname);
  }

  // The status filter by registration: the server filters from the link's snapshot; rows
  // whose registration this page has seen change since are hidden at once.
  function visible(row) {
    const registered = row.dataset.reg === "registered";
    if (view.status === "registered") return registered;
    if (view.status === "unregistered") return !registered;
    return true;
  }

  // The live registrations (with a PBX link): kept by number or name, drawn into the rows.
  const liveState = LIVE_STATE[topic];
  const snapshot = liveState ? pageSnapshot() : null;
  let registrations = new Map();
  const drawRow = (row) => {
    if (snapshot) liveState.draw(row, registrations.get(row.dataset.liveKey));
  };
  const rowFor = (key) => [...tbody.rows].find((row) => row.dataset.liveKey === key);
  const diagnostics =
    snapshot && topic === "extension"
      ? initDiagnostics(live, { tbody, snapshot, registrationOf: (key) => registrations.get(key) })
      : { refresh() {} };

  function drawCounts(count) {
    rowCount.textContent = `${total} ${total === 1 ? rowCount.dataset.singular : rowCount.dataset.plural}`;
    rowCount.dataset.total = total;
    emptyState.hidden = total > 0;
    if (count !== undefined) noMatch.hidden = total === 0 || count > 0;
  }

  function refreshView() {
    let shown = 0;
    for (const row of tbody.rows) {
      row.hidden = !visible(row);
      if (!row.hidden) shown += 1;
    }
    table.dataset.shown = shown;
  }

  function drawSort() {
    for (const header of headers) {
      const key = header.dataset.sortKey;
      if (key === sortKey()) {
        header.setAttribute("aria-sort", view.sort.startsWith("-") ? "descending" : "ascending");
        header.value = view.sort.startsWith("-") ? key : `-${key}`;
      } else {
        header.removeAttribute("aria-sort");
        header.value = key;
      }
    }
    form.elements.sort.value = view.sort;
  }

  // --- fetches: one at a time, in order ---------------------------------------------------
  let chain = Promise.resolve();
  const enqueue = (task) => (chain = chain.then(task).catch((error) => console.error(error)));

  let pageQueued = false; // a page fetch waits in the chain
  let pageFetching = false;
  let newerDuringFetch = false; // a row event above the fetched position arrived meanwhile
  let generation = 0; // the view changed (search, sort, page) since a fetch started
  let pageTimer = null;
  let firstWait = 0;
  let liveReason = false; // the page is fetched for a live change (flash what changed)

  /** Fetch the current page after a short quiet time (or at once with delay 0). */
  function schedulePage(delay = DEBOUNCE_MS, { live: forLive = true } = {}) {
    liveReason ||= forLive;
    const now = performance.now();
    if (pageTimer === null) firstWait = now;
    clearTimeout(pageTimer);
    const wait = Math.max(0, Math.min(delay, firstWait + MAX_WAIT_MS - now));
    pageTimer = setTimeout(() => {
      pageTimer = null;
      queuePage();
    }, wait);
  }

  function queuePage() {
    if (pageQueued) return;
    pageQueued = true;
    enqueue(loadPage);
  }

  async function loadPage() {
    pageQueued = false;
    pageFetching = true;
    newerDuringFetch = false;
    const asked = generation;
    const flashChanged = liveReason;
    liveReason = false;
    let data;
    try {
      const response = await fetch(`/${slug}/rows?${queryString()}`, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      if (response.redirected && new URL(response.url).pathname.startsWith("/login")) {
        location.assign(`/login/?next=${encodeURIComponent(location.pathname)}`);
        return;
      }
      if (!response.ok) throw new Error(`GET /${slug}/rows: ${response.status}`);
      data = await response.json();
    } finally {
      pageFetching = false;
    }
    if (asked !== generation) return; // the view changed meanwhile: its own fetch follows
    showPage(data, flashChanged);
    if (newerDuringFetch) queuePage();
  }

  function showPage(data, flashChanged) {
    const fresh = parseRows(data.html).map((row) => {
      const old = document.getElementById(row.id);
      if (old && serverHtml.get(old) === row.outerHTML) return old; // unchanged: keep it (and its focus)
      serverHtml.set(row, row.outerHTML);
      drawRow(row);
      if (flashChanged) flash(row);
      if (old) {
        const focused = old.contains(document.activeElement) ? document.activeElement.dataset.action : null;
        old.replaceWith(row);
        if (focused) row.querySelector(`[data-action="${focused}"]`)?.focus();
      }
      return row;
    });
    const keep = new Set(fresh);
    for (const row of [...tbody.rows]) if (!keep.has(row)) row.remove();
    fresh.forEach((row, index) => {
      if (tbody.rows[index] !== row) tbody.insertBefore(row, tbody.rows[index] || null);
    });
    const focusedPage = pager.contains(document.activeElement) ? document.activeElement.getAttribute("aria-label") : null;
    pager.innerHTML = data.pager;
    if (focusedPage) pager.querySelector(`[aria-label="${focusedPage}"]`)?.focus();
    const text = `${data.count ? `Showing ${data.start}–${data.end} of ${data.count}` : "Nothing to show"}${
      data.count !== data.total ? ` (filtered from ${data.total})` : ""
    }`;
    if (summary.textContent.trim() !== text) summary.textContent = text;
    total = data.total;
    drawCounts(data.count);
    view.page = String(data.page);
    saveView();
    rowsSeq = toSeq(data.seq);
    diagnostics.refresh();
    refreshView();
  }

  // A row changed: fetch it (in view) or the page (not in view). Used by the editor too.
  const pendingRows = new Set();
  let rowsTimer = null;
  function refreshRow(id) {
    if (!document.getElementById(rowId(id))) {
      schedulePage();
      return;
    }
    pendingRows.add(id);
    if (rowsTimer === null) rowsTimer = setTimeout(flushRows, 15);
  }

  function flushRows() {
    rowsTimer = null;
    const ids = [...pendingRows];
    pendingRows.clear();
    if (ids.length > BATCH_ROWS || pageQueued || pageTimer !== null) {
      schedulePage(0);
      return;
    }
    for (const id of ids) queueRow(id);
  }

  const queuedRows = new Set();
  function queueRow(id) {
    if (queuedRows.has(id)) return;
    queuedRows.add(id);
    enqueue(() => loadRow(id));
  }

  async function loadRow(id) {
    queuedRows.delete(id);
    const html = await fetchFragment(`/${slug}/${id}/row`);
    const old = document.getElementById(rowId(id));
    if (html === null) {
      old?.remove();
      schedulePage();
      return;
    }
    if (!old) {
      schedulePage();
      return;
    }
    const [row] = parseRows(html);
    serverHtml.set(row, row.outerHTML);
    drawRow(row);
    // What the filter, search and sort look at changed: the row may leave the view or move.
    const key = `k${sortKey()[0].toUpperCase()}${sortKey().slice(1)}`;
    const changed = (name) => old.dataset[name] !== row.dataset[name];
    const moved =
      changed(key) ||
      (view.q && changed("search")) ||
      (["enabled", "disabled"].includes(view.status) && changed("enabled"));
    const focused = old.contains(document.activeElement) ? document.activeElement.dataset.action : null;
    old.replaceWith(row);
    if (focused) row.querySelector(`[data-action="${focused}"]`)?.focus();
    flash(row);
    diagnostics.refresh(row.dataset.liveKey);
    refreshView();
    if (moved) schedulePage();
  }

  // --- live events ------------------------------------------------------------------------
  /** Whether a row event is news for the rows shown (not already in them). */
  function news(frame) {
    const seq = toSeq(frame.seq);
    if (seq !== null && rowsSeq !== null && seq <= rowsSeq) return false;
    if (pageFetching) newerDuringFetch = true;
    return true;
  }

  live.on(`${topic}.created`, (frame) => {
    if (!news(frame)) return;
    total += 1;
    drawCounts();
    schedulePage();
  });
  live.on(`${topic}.updated`, (frame) => {
    if (news(frame)) refreshRow(frame.payload.id);
  });
  live.on(`${topic}.deleted`, (frame) => {
    if (!news(frame)) return;
    total = Math.max(0, total - 1);
    drawCounts();
    document.getElementById(rowId(frame.payload.id))?.remove();
    refreshView();
    schedulePage();
  });
  live.onResync(() => schedulePage(0));

  if (snapshot) {
    follow(live, {
      snapshot,
      path: liveState.path,
      types: [liveState.event],
      load: (document) => {
        registrations = new Map((document[liveState.list] || []).map((item) => [String(liveState.key(item)), item]));
        for (const row of tbody.rows) drawRow(row);
        diagnostics.refresh();
        refreshView();
      },
      apply: (frame) => {
        const key = String(liveState.key(frame.payload));
        registrations.set(key, frame.payload);
        diagnostics.refresh(key);
        const row = rowFor(key);
        if (row) drawRow(row);
        refreshView();
        // The server filters and sorts by registration: a phone not in view may enter it, the
        // order may change. A phone in view that leaves the filter is hidden (just above) and
        // stays in the table, following its state, until the page is next fetched.
        const filtered = view.status === "registered" || view.status === "unregistered";
        if (sortKey() === "status" || (filtered && !row)) schedulePage();
      },
    });
  }

  // --- the view: search, filter, sort, pages ----------------------------------------------
  function changeView(changes, delay = 0) {
    Object.assign(view, changes);
    generation += 1;
    drawSort();
    saveView();
    if (delay) schedulePage(delay, { live: false });
    else {
      clearTimeout(pageTimer);
      pageTimer = null;
      queuePage();
    }
  }

  search.addEventListener("input", () => changeView({ q: search.value.trim(), page: "1" }, SEARCH_MS));
  statusFilter.addEventListener("change", () => changeView({ status: statusFilter.value, page: "1" }));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = event.submitter?.dataset.sortKey;
    if (key) {
      const sort = view.sort === key ? `-${key}` : key;
      changeView({ sort, page: "1" });
    } else {
      changeView({ q: search.value.trim(), status: statusFilter.value, page: "1" });
    }
  });
  pager.addEventListener("click", (event) => {
    const link = event.target.closest("a[data-page]");
    if (!link) return;
    event.preventDefault();
    changeView({ page: link.dataset.page });
  });

  drawSort();
  drawCounts(tbody.rows.length);
  refreshView();

  if (document.getElementById("edit-dialog")) {
    initEditor({ live, slug, topic, tbody, refreshRow });
  }
}

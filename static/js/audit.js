/**
 * The Audit page: a page of entries from GET /api/audit (newest first, filtered by object,
 * user and time), then new entries from the "audit" topic live (docs/audit.md).
 *
 * - Entries are untrusted text (labels, usernames, field values): textContent only.
 * - Bounded: at most MAX_ROWS rows are kept; the oldest leave the page (the REST API keeps them).
 * - A live entry is shown only if it matches the filters; after every (re)subscription the
 *   first page is read again, so nothing made while the socket was away is missed.
 */
import { api } from "./api.js";

export const MAX_ROWS = 1000;

function when(at) {
  const date = new Date(at);
  return Number.isNaN(date.getTime()) ? String(at ?? "") : date.toLocaleString();
}

function shown(value) {
  if (value === undefined) return "";
  if (value === null || value === "") return "(empty)";
  return typeof value === "string" ? value : JSON.stringify(value);
}

/** The changes as "field: before → after" lines (a secret: "field: changed"). */
export function describe(changes) {
  return Object.entries(changes || {}).map(([field, change]) => {
    if (typeof change === "string") return `${field}: ${change}`;
    if ("before" in change && "after" in change) return `${field}: ${shown(change.before)} → ${shown(change.after)}`;
    if ("after" in change) return `${field}: ${shown(change.after)}`;
    return `${field}: was ${shown(change.before)}`;
  });
}

function rowFor(entry) {
  const tr = document.createElement("tr");
  tr.id = `audit-${Number(entry.id)}`;
  tr.dataset.action = String(entry.action);
  const object = [entry.object_type, entry.object_label || entry.object_id].filter(Boolean).join(" ");
  for (const text of [when(entry.at), entry.username || "—", entry.address || "—", entry.via, entry.action, object]) {
    const td = document.createElement("td");
    td.textContent = String(text ?? "");
    tr.append(td);
  }
  const td = document.createElement("td");
  td.className = "audit-changes";
  for (const line of describe(entry.changes)) {
    const div = document.createElement("div");
    div.textContent = line;
    td.append(div);
  }
  tr.append(td);
  return tr;
}

export function init(live) {
  const form = document.getElementById("audit-filters");
  const rows = document.getElementById("audit-rows");
  const status = document.getElementById("audit-status");
  const empty = document.getElementById("audit-empty");
  const more = document.getElementById("audit-more");
  if (!form || !rows) return;
  let filters = {};
  let next = null; // the next (older) page's number
  let loading = 0;
  let total = 0; // entries matching the filters, as REST counted them, plus live ones since

  function showTotal() {
    status.textContent = `${total} entr${total === 1 ? "y" : "ies"}`;
  }

  function readFilters() {
    const values = {};
    for (const element of form.elements) {
      if (!element.name || !element.value.trim()) continue;
      const value = element.value.trim();
      values[element.name] = element.type === "datetime-local" ? new Date(value).toISOString() : value;
    }
    return values;
  }

  function matches(entry) {
    if (filters.object_type && entry.object_type !== filters.object_type) return false;
    if (filters.object_id && String(entry.object_id) !== filters.object_id) return false;
    if (filters.user && entry.username !== filters.user && String(entry.user) !== filters.user) return false;
    if (filters.since && new Date(entry.at) < new Date(filters.since)) return false;
    if (filters.until && new Date(entry.at) >= new Date(filters.until)) return false;
    return true;
  }

  function bound() {
    while (rows.children.length > MAX_ROWS) rows.lastElementChild.remove();
  }

  function refreshEmpty() {
    empty.hidden = rows.children.length > 0;
  }

  async function load(page = 1) {
    const mine = ++loading;
    status.textContent = "Loading…";
    const query = new URLSearchParams({ ...filters, page: String(page) });
    const { ok, data } = await api("GET", `/api/audit?${query}`);
    if (mine !== loading) return; // a newer load is in flight
    if (!ok) {
      status.textContent = data?.detail || "Could not load the audit log.";
      return;
    }
    if (page === 1) rows.replaceChildren();
    for (const entry of data.results) {
      if (!document.getElementById(`audit-${Number(entry.id)}`)) rows.append(rowFor(entry));
    }
    bound();
    next = data.next ? page + 1 : null;
    more.hidden = next === null;
    total = data.count;
    showTotal();
    refreshEmpty();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    filters = readFilters();
    load(1);
  });
  more.addEventListener("click", () => next && load(next));

  live.onTopic("audit", (frame) => {
    const entry = frame.payload;
    if (!entry || document.getElementById(`audit-${Number(entry.id)}`) || !matches(entry)) return;
    const row = rowFor(entry);
    row.classList.add("new");
    rows.prepend(row);
    total += 1;
    showTotal();
    bound();
    refreshEmpty();
  });
  // Every (re)subscription reads the first page again: entries made while away appear.
  live.onTopicState((state) => {
    if (state.type === "forbidden") status.textContent = "Live updates are for staff users.";
    if (state.type === "subscribed" && (state.topics || []).includes("audit")) load(1);
  });
  live.subscribe(["audit"]);
  load(1);
}

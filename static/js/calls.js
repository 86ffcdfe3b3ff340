/**
 * The Calls page: calls in progress (their duration counting up) and the last 200 ended,
 * live from the call.* events. Also the helpers the dashboard and the list pages share to
 * show the PBX link's live state:
 *
 * - follow(): a snapshot (embedded in the page as #pbx-snapshot, its seq with it) plus the
 *   events after its seq; on resync, the snapshot again from the REST API, the events that
 *   arrive meanwhile held back and applied after it (only those newer than its seq).
 * - CallBook: the calls, keyed by id, and CallTable: a table of them drawn with text only.
 *
 * Nothing here polls. The one timer ticks the durations, and runs only while a call is shown.
 */
import { api } from "./api.js";

export const MAX_ENDED = 200;

/** The page's embedded PBX snapshot ({seq, server_time, ...}), or null when no link is configured. */
export function pageSnapshot() {
  const source = document.getElementById("pbx-snapshot");
  if (!source) return null;
  try {
    return JSON.parse(source.textContent);
  } catch {
    return null;
  }
}

/**
 * Keep one part of the PBX state: load(document) takes a snapshot ({seq, ...}), apply(frame)
 * one event of `types` newer than it. `path` is the REST snapshot to reload after a resync.
 */
export function follow(live, { snapshot, path, types, load, apply }) {
  let seq = snapshot.seq ?? 0;
  let held = null; // events received while a snapshot is being reloaded
  load(snapshot);
  for (const type of types) {
    live.on(type, (frame) => {
      if (held) held.push(frame);
      else if (frame.seq > seq) apply(frame);
    });
  }
  live.onResync(async () => {
    if (held) return; // a reload is already on its way
    held = [];
    const { ok, data } = await api("GET", path);
    const frames = held;
    held = null;
    if (ok && data && typeof data === "object") {
      seq = data.seq ?? seq;
      load(data);
    }
    for (const frame of frames) if (frame.seq > seq) apply(frame);
  });
}

// --- the browser's clock against the server's --------------------------------------------

let skew = 0; // ms the browser's clock is ahead of the server's (page load delay included)

/** Learn the server's clock: from the page's snapshot, then from every event's timestamp. */
export function syncClock(live, serverTime) {
  const measure = (iso) => {
    const at = Date.parse(iso);
    if (!Number.isNaN(at)) return Date.now() - at;
    return null;
  };
  let best = serverTime ? measure(serverTime) : null;
  if (best !== null) skew = best;
  live.on("*", (frame) => {
    const measured = measure(frame.timestamp);
    if (measured === null) return;
    // Delivery only adds delay: the smallest difference is the nearest to the clocks' skew.
    best = best === null ? measured : Math.min(best, measured);
    skew = best;
  });
}

/** Now, on the server's clock (ms). */
export function serverNow() {
  return Date.now() - skew;
}

// --- formatting ---------------------------------------------------------------------------

/** A time of day for today, a date and time otherwise, in the browser's own locale. */
export function formatTime(iso) {
  const when = new Date(iso);
  if (!iso || Number.isNaN(when.getTime())) return "—";
  return when.toDateString() === new Date().toDateString() ? when.toLocaleTimeString() : when.toLocaleString();
}

/** 0:07, 12:34, 1:02:03. */
export function formatDuration(seconds) {
  const total = Math.max(0, Math.floor(seconds));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

export function formatRtt(ms) {
  if (ms === null || ms === undefined || Number.isNaN(Number(ms))) return "";
  const value = Number(ms);
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ms`;
}

const DIRECTIONS = { internal: "Internal", inbound: "Inbound", outbound: "Outbound" };

// --- the calls ----------------------------------------------------------------------------

/** Active calls by id and the ended ones, newest first; listeners hear every change. */
export class CallBook {
  constructor() {
    this.active = new Map();
    this.ended = [];
    this.endedIds = new Set();
    this.listeners = new Set();
  }

  onChange(listener) {
    this.listeners.add(listener);
  }

  load(document) {
    const calls = document.calls || {};
    this.active = new Map((calls.active || []).map((call) => [String(call.id), call]));
    this.ended = (calls.ended || []).slice(0, MAX_ENDED);
    this.endedIds = new Set(this.ended.map((call) => String(call.id)));
    this.#changed({ reset: true });
  }

  apply(frame) {
    const payload = frame.payload || {};
    const id = String(payload.id);
    if (frame.type === "call.started") {
      if (this.endedIds.has(id)) return;
      this.active.set(id, { answered_at: null, ...this.active.get(id), ...payload });
      this.#changed({ id });
    } else if (frame.type === "call.answered") {
      const call = this.active.get(id);
      if (!call) return;
      call.answered_at = payload.answered_at;
      this.#changed({ id });
    } else if (frame.type === "call.ended") {
      if (this.endedIds.has(id)) return;
      const call = this.active.get(id) || { id: payload.id, from: null, to: null, direction: null, trunk: null };
      this.active.delete(id);
      const ended = { ...call, ended_at: frame.timestamp, ...payload };
      this.ended.unshift(ended);
      this.endedIds.add(id);
      while (this.ended.length > MAX_ENDED) this.endedIds.delete(String(this.ended.pop().id));
      this.#changed({ id, ended });
    }
  }

  #changed(change) {
    for (const listener of this.listeners) listener(change);
  }
}

export const CALL_TYPES = ["call.started", "call.answered", "call.ended"];

/**
 * Columns a call table can show: [header, cell(call, td)]. Cells are filled with text only.
 */
const COLUMNS = {
  from: ["From", (call, td) => text(td, call.from || "—", "num")],
  to: ["To", (call, td) => text(td, call.to || "—", "num")],
  direction: ["Direction", (call, td) => text(td, DIRECTIONS[call.direction] || "—")],
  trunk: ["Trunk", (call, td) => text(td, call.trunk || "—", call.trunk ? "" : "muted")],
  started: ["Started", (call, td) => timeCell(td, call.started_at)],
  state: [
    "State",
    (call, td) => {
      const pill = document.createElement("span");
      pill.className = `pill ${call.answered_at ? "on" : "warn"}`;
      pill.textContent = call.answered_at ? "Talking" : "Ringing";
      td.replaceChildren(pill);
    },
  ],
  duration: [
    "Duration",
    (call, td) => {
      if (call.duration_s !== undefined && call.duration_s !== null) {
        text(td, formatDuration(call.duration_s), "duration");
        if (call.talk_s !== undefined && call.talk_s !== null) td.title = `Talk time ${formatDuration(call.talk_s)}`;
      } else {
        td.dataset.startedAt = call.started_at || "";
        tickCell(td);
      }
    },
  ],
  cause: ["Result", (call, td) => text(td, causeText(call))],
};

function causeText(call) {
  if (call.cause === "pbx restarted") return "Asterisk restarted";
  const base = call.cause_text || (call.cause !== undefined && call.cause !== null ? `Cause ${call.cause}` : "—");
  return call.answered_at || Number(call.talk_s) > 0 ? base : `${base} (not answered)`;
}

function text(td, value, className = "") {
  const span = document.createElement("span");
  if (className) span.className = className;
  span.textContent = value;
  td.replaceChildren(span);
}

function timeCell(td, iso) {
  if (!iso) {
    td.textContent = "—";
    return;
  }
  const time = document.createElement("time");
  time.dateTime = iso;
  time.textContent = formatTime(iso);
  td.replaceChildren(time);
}

function tickCell(td) {
  const started = Date.parse(td.dataset.startedAt);
  const value = Number.isNaN(started) ? "—" : formatDuration((serverNow() - started) / 1000);
  if (td.textContent !== value) td.textContent = value;
}

/**
 * A <table> of calls, one row per call id (rows keep their place: only changed cells are
 * redrawn). columns: keys of COLUMNS. The duration of a call in progress ticks each second.
 */
export class CallTable {
  constructor(tbody, columns, { empty, count } = {}) {
    this.tbody = tbody;
    this.columns = columns;
    this.empty = empty; // an element shown when there is no call
    this.count = count; // an element showing how many there are
    this.rows = new Map();
    this.timer = null;
  }

  /** Draw exactly these calls, in this order. */
  show(calls) {
    const keep = new Set();
    const rows = calls.map((call) => {
      const id = String(call.id);
      keep.add(id);
      return this.#row(id, call);
    });
    for (const [id, row] of this.rows) {
      if (!keep.has(id)) {
        row.remove();
        this.rows.delete(id);
      }
    }
    rows.forEach((row, index) => {
      if (this.tbody.children[index] !== row) this.tbody.insertBefore(row, this.tbody.children[index] || null);
    });
    this.#after();
  }

  /** Add (or redraw) one call at the top. */
  prepend(call, limit) {
    const row = this.#row(String(call.id), call);
    this.tbody.prepend(row);
    row.classList.remove("flash");
    void row.offsetWidth;
    row.classList.add("flash");
    while (limit && this.tbody.children.length > limit) {
      const last = this.tbody.lastElementChild;
      this.rows.delete(last.dataset.callId);
      last.remove();
    }
    this.#after();
  }

  #row(id, call) {
    let row = this.rows.get(id);
    const fresh = !row;
    if (fresh) {
      row = document.createElement("tr");
      row.dataset.callId = id;
      for (const key of this.columns) {
        const td = document.createElement("td");
        td.dataset.label = COLUMNS[key][0];
        td.dataset.col = key;
        row.append(td);
      }
      this.rows.set(id, row);
    }
    const signature = JSON.stringify(call);
    if (row.dataset.signature !== signature) {
      row.dataset.signature = signature;
      row.dataset.state = call.duration_s !== undefined && call.duration_s !== null ? "ended" : call.answered_at ? "talking" : "ringing";
      this.columns.forEach((key, index) => COLUMNS[key][1](call, row.children[index]));
    }
    return row;
  }

  #after() {
    const n = this.rows.size;
    if (this.empty) this.empty.hidden = n > 0;
    if (this.count && this.count.textContent !== String(n)) {
      this.count.textContent = n;
      this.count.classList.remove("flash");
      void this.count.offsetWidth;
      this.count.classList.add("flash");
    }
    const ticking = [...this.rows.values()].some((row) => row.dataset.state !== "ended");
    if (ticking && this.timer === null) {
      this.timer = setInterval(() => this.tick(), 1000);
    } else if (!ticking && this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  tick() {
    for (const td of this.tbody.querySelectorAll("td[data-started-at]")) tickCell(td);
  }
}

export function columnHeaders(thead, columns) {
  const row = document.createElement("tr");
  for (const key of columns) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = COLUMNS[key][0];
    row.append(th);
  }
  thead.replaceChildren(row);
}

/** The active calls of a book, oldest first (the order they started). */
export function activeCalls(book) {
  return [...book.active.values()].sort((a, b) => String(a.started_at).localeCompare(String(b.started_at)));
}

// --- the Calls page -----------------------------------------------------------------------

const ACTIVE_COLUMNS = ["from", "to", "direction", "trunk", "started", "state", "duration"];
const ENDED_COLUMNS = ["from", "to", "direction", "trunk", "started", "duration", "cause"];

export function init(live) {
  const snapshot = pageSnapshot();
  if (!snapshot) return; // no PBX link: the page says so
  syncClock(live, snapshot.server_time);
  const book = new CallBook();
  columnHeaders(document.querySelector("#active-calls thead"), ACTIVE_COLUMNS);
  columnHeaders(document.querySelector("#ended-calls thead"), ENDED_COLUMNS);
  const active = new CallTable(document.querySelector("#active-calls tbody"), ACTIVE_COLUMNS, {
    empty: document.getElementById("active-empty"),
    count: document.getElementById("active-count"),
  });
  const ended = new CallTable(document.querySelector("#ended-calls tbody"), ENDED_COLUMNS, {
    empty: document.getElementById("ended-empty"),
    count: document.getElementById("ended-count"),
  });
  book.onChange((change) => {
    active.show(activeCalls(book));
    if (change.reset) ended.show(book.ended);
    else if (change.ended) ended.prepend(change.ended, MAX_ENDED);
  });
  follow(live, {
    snapshot,
    path: "/api/pbx/calls",
    types: CALL_TYPES,
    load: (document) => book.load(document),
    apply: (frame) => book.apply(frame),
  });
}

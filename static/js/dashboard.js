/**
 * The dashboard: counts from status_update, connection state, and recent changes; with a
 * PBX link also the calls in progress (durations ticking), the registered phones and the
 * recent failed SIP logins, from the page's embedded snapshot (#pbx-snapshot) and the
 * call.*, extension.registration and security.sip_auth_failed events after its seq.
 */
import { api } from "./api.js";
import {
  activeCalls,
  CALL_TYPES,
  CallBook,
  CallTable,
  columnHeaders,
  follow,
  formatRtt,
  formatTime,
  pageSnapshot,
  syncClock,
} from "./calls.js";

const CALL_COLUMNS = ["from", "to", "trunk", "duration"];
const MAX_PHONES = 12; // registered phones listed before "and N more"
const MAX_FAILURES = 10;
const failureKey = (f) => `${f.username}|${f.remote_ip}|${f.first_at}`;

const NAMES = {
  extension: (p) => `Extension ${p.extension_number}${p.name ? ` (${p.name})` : ""}`,
  trunk: (p) => `Trunk ${p.name}`,
};
const VERBS = { created: "created", updated: "changed", deleted: "deleted" };

export function init(live) {
  live.on("status_update", (frame) => {
    for (const [key, value] of Object.entries(frame.payload)) {
      for (const element of document.querySelectorAll(`[data-count="${key}"]`)) {
        if (element.textContent !== String(value)) {
          element.textContent = value;
          element.classList.remove("flash");
          void element.offsetWidth; // restart the animation
          element.classList.add("flash");
        }
      }
    }
  });

  const connection = document.getElementById("dash-connection");
  live.onState((state) => {
    connection.textContent = { connected: "Live", connecting: "Connecting…", reconnecting: "Reconnecting…", offline: "Offline" }[state.status];
    connection.dataset.state = state.status;
  });

  const activity = document.getElementById("activity");
  const lastEvent = document.getElementById("dash-last-event");
  live.on("*", (frame) => {
    const [topic, action] = frame.type.split(".");
    if (!NAMES[topic]) return;
    const item = document.createElement("li");
    const when = new Date(frame.timestamp);
    item.innerHTML = `<time datetime="${frame.timestamp}"></time> <span></span>`;
    item.querySelector("time").textContent = when.toLocaleTimeString();
    item.querySelector("span").textContent = `${NAMES[topic](frame.payload)} ${VERBS[action]}`;
    activity.querySelector(".empty")?.remove();
    activity.prepend(item);
    while (activity.children.length > 10) activity.lastElementChild.remove();
    lastEvent.textContent = `Last change ${when.toLocaleTimeString()}`;
  });

  live.onResync(reloadCounts);

  const snapshot = pageSnapshot();
  if (snapshot) initPbxState(live, snapshot);
}

function initPbxState(live, snapshot) {
  syncClock(live, snapshot.server_time);

  // Calls in progress (for staff and users allowed to see calls: rayanpbx/audiences.py;
  // the page embeds them only then).
  if ("calls" in snapshot) followCalls(live, snapshot);

  // Registered phones.
  let registrations = new Map();
  const phones = document.getElementById("dash-registrations");
  const drawPhones = () => {
    const registered = [...registrations.values()]
      .filter((r) => r.state === "registered")
      .sort((a, b) => String(a.extension_number).localeCompare(String(b.extension_number), undefined, { numeric: true }));
    phones.replaceChildren(...registered.slice(0, MAX_PHONES).map(phoneItem));
    document.getElementById("dash-registrations-empty").hidden = registered.length > 0;
    const more = document.getElementById("dash-registrations-more");
    more.hidden = registered.length <= MAX_PHONES;
    more.textContent = `…and ${registered.length - MAX_PHONES} more.`;
  };
  follow(live, {
    snapshot: { seq: snapshot.seq, registrations: snapshot.registrations },
    path: "/api/pbx/registrations",
    types: ["extension.registration"],
    load: (document) => {
      registrations = new Map((document.registrations || []).map((r) => [String(r.extension_number), r]));
      drawPhones();
    },
    apply: (frame) => {
      registrations.set(String(frame.payload.extension_number), frame.payload);
      drawPhones();
    },
  });

  // Failed SIP logins, newest first (staff only, likewise).
  if ("auth_failures" in snapshot) followFailures(live, snapshot, failureItem);

  function phoneItem(registration) {
    const contacts = registration.contacts || [];
    const contact = contacts.find((c) => c.rtt_ms !== null && c.rtt_ms !== undefined) || contacts[0] || {};
    const item = document.createElement("li");
    item.dataset.number = registration.extension_number;
    const number = document.createElement("span");
    number.className = "num";
    number.textContent = registration.extension_number;
    const ip = document.createElement("span");
    ip.className = "ip";
    ip.textContent = contact.ip || "—";
    const rtt = document.createElement("span");
    rtt.className = "rtt";
    rtt.textContent = formatRtt(contact.rtt_ms);
    if (contact.user_agent) item.title = `User agent: ${contact.user_agent}`;
    item.append(number, ip, rtt);
    return item;
  }

  function failureItem(failure) {
    const item = document.createElement("li");
    item.dataset.key = failureKey(failure);
    const time = document.createElement("time");
    time.dateTime = failure.last_at || "";
    time.textContent = formatTime(failure.last_at);
    const who = document.createElement("strong");
    who.textContent = failure.username || "(no username)";
    const from = document.createElement("code");
    from.textContent = failure.remote_ip || "?";
    const n = Number(failure.attempts) || 1;
    item.append(time, " ", who, " from ", from, ` — ${n} attempt${n === 1 ? "" : "s"}`);
    return item;
  }
}

/** After a resync: read the counts again from the REST API. */
async function reloadCounts() {
  const count = async (path) => (await api("GET", path)).data?.count;
  const values = {
    extensions: await count("/api/extensions?enabled=true&page_size=1"),
    extensions_total: await count("/api/extensions?page_size=1"),
    trunks: await count("/api/trunks?enabled=true&page_size=1"),
    trunks_total: await count("/api/trunks?page_size=1"),
  };
  for (const [key, value] of Object.entries(values)) {
    if (value === undefined) continue;
    for (const element of document.querySelectorAll(`[data-count="${key}"]`)) element.textContent = value;
  }
}

function followCalls(live, snapshot) {
  const book = new CallBook();
  columnHeaders(document.querySelector("#dash-calls thead"), CALL_COLUMNS);
  const table = new CallTable(document.querySelector("#dash-calls tbody"), CALL_COLUMNS, {
    empty: document.getElementById("dash-calls-empty"),
    count: document.getElementById("dash-active-count"),
  });
  const callsTable = document.getElementById("dash-calls");
  book.onChange(() => {
    const calls = activeCalls(book);
    callsTable.hidden = calls.length === 0;
    table.show(calls);
  });
  follow(live, {
    snapshot: { seq: snapshot.seq, calls: snapshot.calls },
    path: "/api/pbx/calls",
    types: CALL_TYPES,
    load: (document) => book.load(document),
    apply: (frame) => book.apply(frame),
  });
}

function followFailures(live, snapshot, failureItem) {
  const failures = document.getElementById("dash-auth-failures");
  const drawFailuresEmpty = () => {
    document.getElementById("dash-auth-empty").hidden = failures.children.length > 0;
  };
  follow(live, {
    snapshot: { seq: snapshot.seq, auth_failures: snapshot.auth_failures },
    path: "/api/pbx/security",
    types: ["security.sip_auth_failed"],
    load: (document) => {
      failures.replaceChildren(...(document.auth_failures || []).slice(0, MAX_FAILURES).map(failureItem));
      drawFailuresEmpty();
    },
    apply: (frame) => {
      const key = failureKey(frame.payload);
      [...failures.children].find((item) => item.dataset.key === key)?.remove();
      failures.prepend(failureItem(frame.payload));
      while (failures.children.length > MAX_FAILURES) failures.lastElementChild.remove();
      drawFailuresEmpty();
    },
  });
}

/**
 * The PBX link's state, live on every page: the banners under the top bar (changes not yet
 * applied, a failed apply, drift between RayanPBX and Asterisk, Asterisk unreachable) and,
 * on the dashboard, the Asterisk card.
 *
 * The page is rendered with the status (templates/base.html embeds it as #pbx-status, and
 * renders the banners and the card from it, so they are right before this script runs). This
 * module keeps that document current from the pbx.link, pbx.apply and pbx.drift events, re-reads
 * it from GET /api/pbx after a resync, and redraws with the templates' wording: only text and
 * the hidden attribute change, never markup from data. Nothing here polls; the one timer is the
 * uptime's clock, which runs only while it is on screen.
 */
import { api } from "./api.js";

const MAX_LISTED = 10; // names listed in a banner before "and N more" (the templates' slice)

const PILLS = {
  unconfigured: ["off", "Not configured"],
  connecting: ["warn", "Connecting…"],
  connected: ["on", "Connected"],
  disconnected: ["danger", "Disconnected"],
};

let status = null;
let waiting = 0; // changes no running apply has taken yet (the link's own count)
let clock = null;

/** The PBX link's status as this page knows it now ({link, apply, ...}), or null. Read-only. */
export function pbxStatus() {
  return status;
}

export function initPbx(live) {
  const source = document.getElementById("pbx-status");
  if (!source) return; // not an authenticated page
  try {
    adopt(JSON.parse(source.textContent));
  } catch {
    return;
  }
  live.on("pbx.link", (frame) => {
    const wasConnected = status.link.state === "connected";
    status.link = { ...status.link, ...frame.payload };
    if (frame.payload.asterisk_version) status.asterisk.version = frame.payload.asterisk_version;
    if (status.link.state === "connected" && !wasConnected) {
      // Asterisk may have restarted meanwhile: its start time is only in the full status.
      status.asterisk.startup_at = null;
      refreshAsterisk();
    }
    render();
  });
  live.on("pbx.apply", (frame) => {
    const apply = frame.payload;
    const count = apply.pending_changes || 0;
    const finished = apply.state === "applied" || apply.state === "failed";
    status.apply = { ...apply, errors: apply.errors || [], finished_at: finished ? frame.timestamp : null };
    // The link's arithmetic (pbx/link.py): an event's pending_changes is what its apply takes;
    // what is not yet in Asterisk is what waits, plus what a running apply is writing.
    if (apply.state === "pending") {
      waiting = count;
      status.pending_changes = waiting;
    } else if (apply.state === "applying") {
      waiting = 0; // the apply took them all
      status.pending_changes = count;
    } else {
      status.pending_changes = waiting; // changes made while it ran
    }
    render();
  });
  live.on("pbx.drift", (frame) => {
    status.drift = normaliseDrift(frame.payload);
    render();
  });
  live.onResync(reload);
  render();
}

/** After a resync: the whole status again, from the REST API. */
async function reload() {
  const { ok, data } = await api("GET", "/api/pbx");
  if (!ok || !data || typeof data.link !== "object") return; // keep what we have
  adopt(data);
  render();
}

/** Take a whole status document (the page's, or the API's). */
function adopt(document) {
  status = normalise(document);
  const running = status.apply?.state === "applying" ? status.apply.pending_changes || 0 : 0;
  waiting = Math.max(0, status.pending_changes - running);
}

/** After the link came back: take Asterisk's facts (start and reload times) from the status. */
async function refreshAsterisk() {
  const { ok, data } = await api("GET", "/api/pbx");
  // Only a document written since the link reconnected describes this Asterisk.
  if (!ok || data?.link?.state !== "connected" || status.link.state !== "connected") return;
  status.asterisk = { ...status.asterisk, ...data.asterisk };
  render();
}

function normalise(document) {
  return {
    ...document,
    link: { state: "unconfigured", asterisk_version: null, since: null, error: null, ...document.link },
    asterisk: { version: null, startup_at: null, reload_at: null, ...document.asterisk },
    apply: document.apply ? { ...document.apply, errors: document.apply.errors || [] } : null,
    pending_changes: document.pending_changes || 0,
    drift: normaliseDrift(document.drift),
  };
}

function normaliseDrift(drift) {
  return { in_db_only: drift?.in_db_only || [], in_asterisk_only: drift?.in_asterisk_only || [] };
}

// --- what the page says (the templates say the same) --------------------------------------

/** Whether a link is configured at all: when not, no banner shows and the dashboard says so. */
function active() {
  return Boolean(status.configured) && status.link.state !== "unconfigured";
}

/** Applying now, or about to: an apply is running, or queued while Asterisk is reachable. */
function applying() {
  const state = status.apply?.state;
  return state === "applying" || (state === "pending" && status.link.state === "connected");
}

function changes(n) {
  return n > 0 ? `${n} ${n === 1 ? "change" : "changes"}` : "changes";
}

function pendingText() {
  const n = status.pending_changes;
  if (applying()) return n > 0 ? `Applying ${changes(n)}…` : "Verifying Asterisk's configuration…";
  return n > 0 ? `${changes(n)} not yet applied` : "Changes not yet applied";
}

function listed(names) {
  const shown = names.slice(0, MAX_LISTED).join(", ");
  return names.length > MAX_LISTED ? `${shown} and ${names.length - MAX_LISTED} more` : shown;
}

function driftText({ in_db_only: db, in_asterisk_only: ast }) {
  let text = db.length ? `In RayanPBX but not in Asterisk: ${listed(db)}` : "";
  if (ast.length) text += `${db.length ? "; in" : "In"} Asterisk but removed here: ${listed(ast)}`;
  return `${text}.`;
}

function lastApplyText(apply) {
  if (!apply) return ["None yet"];
  if (apply.state === "pending") return ["Waiting to start"];
  if (apply.state === "applying") return ["In progress…"];
  const head = apply.state === "applied" ? "Applied" : "Failed";
  let tail = apply.duration_ms !== null && apply.duration_ms !== undefined ? ` in ${apply.duration_ms} ms` : "";
  // (errors_hidden: how many errors a non-staff user is not shown: rayanpbx/audiences.py)
  const count = apply.errors.length || apply.errors_hidden || 0;
  if (apply.state === "failed") tail += ` (${count} error${count === 1 ? "" : "s"})`;
  return apply.finished_at ? [`${head} at `, apply.finished_at, tail] : [head + tail];
}

/** A time of day for today, a date and time otherwise, in the browser's own locale. */
function formatTime(iso) {
  const when = new Date(iso);
  if (Number.isNaN(when.getTime())) return iso;
  return when.toDateString() === new Date().toDateString() ? when.toLocaleTimeString() : when.toLocaleString();
}

function formatUptime(seconds) {
  const parts = [];
  const units = [["d", 86400], ["h", 3600], ["min", 60]];
  let rest = Math.max(0, Math.floor(seconds));
  for (const [unit, size] of units) {
    if (rest >= size || parts.length) parts.push(`${Math.floor(rest / size)} ${unit}`);
    rest %= size;
  }
  parts.push(`${rest} s`);
  return parts.join(" ");
}

// --- drawing ------------------------------------------------------------------------------

function render() {
  renderBanners();
  renderCard();
}

function renderBanners() {
  const on = active();
  const { link, apply, drift } = status;

  const linkBanner = document.getElementById("pbx-link-banner");
  if (linkBanner) {
    show(linkBanner, on && link.state === "disconnected");
    const since = part(linkBanner, "since");
    show(since, Boolean(link.since));
    if (link.since) setTime(since.querySelector("time"), link.since);
    const error = part(linkBanner, "error");
    show(error, Boolean(link.error));
    setText(error, link.error ? ` (${link.error})` : "");
  }

  const failed = document.getElementById("pbx-failed-banner");
  if (failed) {
    const isFailed = on && apply?.state === "failed";
    show(failed, isFailed);
    const errors = isFailed ? apply.errors : [];
    const list = part(failed, "errors");
    const items = errors.slice(0, MAX_LISTED).map(({ object, message }) => {
      const item = document.createElement("li");
      const name = document.createElement("strong");
      name.textContent = object;
      item.append(name, `: ${message}`);
      return item;
    });
    if (list.textContent !== items.map((item) => item.textContent).join("")) list.replaceChildren(...items);
    const more = part(failed, "more");
    show(more, errors.length > MAX_LISTED);
    setText(more, `…and ${errors.length - MAX_LISTED} more.`);
    const hidden = isFailed ? apply.errors_hidden || 0 : 0;
    show(part(failed, "hidden"), hidden > 0);
    setText(part(failed, "hidden"), `${hidden} error${hidden === 1 ? "" : "s"}: the details are shown to staff.`);
  }

  const pending = document.getElementById("pbx-pending-banner");
  if (pending) {
    const state = apply?.state;
    show(pending, on && (status.pending_changes > 0 || state === "pending" || state === "applying"));
    pending.toggleAttribute("data-applying", applying());
    setText(part(pending, "text"), pendingText());
  }

  const driftBanner = document.getElementById("pbx-drift-banner");
  if (driftBanner) {
    const disagree = drift.in_db_only.length > 0 || drift.in_asterisk_only.length > 0;
    show(driftBanner, on && disagree);
    if (disagree) setText(part(driftBanner, "text"), driftText(drift));
  }
}

function renderCard() {
  const card = document.getElementById("pbx-card");
  if (!card) return;
  const on = active();
  const { link, asterisk, apply } = status;
  const state = on ? link.state : "unconfigured";

  const pill = document.getElementById("pbx-pill");
  const [kind, label] = PILLS[state] || PILLS.disconnected;
  pill.className = `pill ${kind}`;
  pill.dataset.state = state;
  setText(pill, label);
  const since = document.getElementById("pbx-since");
  show(since, on && Boolean(link.since));
  if (link.since) setTime(since.querySelector("time"), link.since);

  const help = document.getElementById("pbx-help");
  show(help, !on);
  setText(part(help, "help"), status.help || "");
  show(document.getElementById("pbx-facts"), on);

  setText(document.getElementById("pbx-version"), asterisk.version || link.asterisk_version || "—");
  setTimeOrDash(document.getElementById("pbx-reload"), asterisk.reload_at);
  const lastApply = document.getElementById("pbx-last-apply");
  lastApply.dataset.state = apply?.state || "none";
  const [head, when, tail] = lastApplyText(apply);
  if (when === undefined) {
    setText(lastApply, head);
  } else {
    let time = lastApply.querySelector("time");
    if (!time || lastApply.childNodes.length !== 3) {
      time = document.createElement("time");
      lastApply.replaceChildren(head, time, tail);
    } else {
      setText(lastApply.firstChild, head);
      setText(lastApply.lastChild, tail);
    }
    setTime(time, when);
  }
  setText(document.getElementById("pbx-pending"), status.pending_changes > 0 ? String(status.pending_changes) : "None");

  const ticking = on && link.state === "connected" && Boolean(asterisk.startup_at);
  if (ticking && clock === null) {
    clock = setInterval(tick, 1000);
  } else if (!ticking && clock !== null) {
    clearInterval(clock);
    clock = null;
  }
  tick();
}

/** The uptime, once a second while Asterisk is connected (the browser's clock, no request). */
function tick() {
  const uptime = document.getElementById("pbx-uptime");
  if (!uptime) return;
  const startup = status.asterisk.startup_at;
  if (clock === null || !startup) {
    setText(uptime, "—");
    return;
  }
  let time = uptime.querySelector("time");
  if (!time) {
    time = document.createElement("time");
    uptime.replaceChildren(time);
  }
  const started = new Date(startup);
  time.dateTime = startup;
  time.title = `Up since ${formatTime(startup)}`;
  time.textContent = formatUptime((Date.now() - started.getTime()) / 1000);
}

// --- small DOM helpers: text only ----------------------------------------------------------

function part(element, name) {
  return element.querySelector(`[data-part="${name}"]`);
}

function show(element, visible) {
  if (element && element.hidden === visible) element.hidden = !visible;
}

/** Set text only when it changed, so a live region announces real changes only. */
function setText(element, text) {
  if (element && element.textContent !== text) element.textContent = text;
}

function setTime(element, iso) {
  if (!element) return;
  if (element.getAttribute("datetime") !== iso) element.dateTime = iso;
  setText(element, formatTime(iso));
}

function setTimeOrDash(element, iso) {
  if (!iso) {
    setText(element, "—");
    return;
  }
  let time = element.querySelector("time");
  if (!time) {
    time = document.createElement("time");
    element.replaceChildren(time);
  }
  setTime(time, iso);
}

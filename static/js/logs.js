/**
 * The Logs page: the last lines from GET /api/logs, then the "logs" topic live
 * (docs/logs.md). Filter by level and source, search, pause / resume, follow the bottom.
 *
 * - Lines are untrusted text: drawn with textContent only, never as HTML.
 * - Bounded: at most MAX_LINES entries are kept; older ones leave the page. While paused,
 *   new lines are still kept (within the bound) and counted; nothing is drawn until resume.
 * - A message's "skipped" count (lines the server dropped in a burst) is shown in place as
 *   "n lines skipped".
 * - Each subscription (the first, and after every reconnect) loads the REST lines again and
 *   merges those newer than the last id shown; topic frames arriving meanwhile wait for it.
 */
import { api } from "./api.js";

export const MAX_LINES = 5000;
const LEVELS = ["debug", "info", "notice", "warning", "error"];

/** Whether entry passes the filters {level, source, q}. Skip markers always pass. */
export function matches(entry, { level, source, q }) {
  if (entry.skip) return true;
  if (source && entry.source !== source) return false;
  if (level && LEVELS.indexOf(entry.level) < LEVELS.indexOf(level)) return false;
  if (q && !`${entry.logger} ${entry.message}`.toLowerCase().includes(q.toLowerCase())) return false;
  return true;
}

function clock(ts) {
  return typeof ts === "string" ? ts.slice(11, 23) : "";
}

function lineElement(entry) {
  const row = document.createElement("div");
  if (entry.skip) {
    row.className = "log-line skipped";
    row.textContent = `${entry.skip} line${entry.skip === 1 ? "" : "s"} skipped`;
    return row;
  }
  row.className = "log-line";
  row.dataset.level = LEVELS.includes(entry.level) ? entry.level : "info";
  row.dataset.source = entry.source === "asterisk" ? "asterisk" : "rayanpbx";
  for (const [cls, text] of [
    ["ts", clock(entry.ts)],
    ["src", row.dataset.source === "asterisk" ? "Asterisk" : "RayanPBX"],
    ["lvl", row.dataset.level.toUpperCase()],
    ["lg", String(entry.logger ?? "")],
    ["msg", String(entry.message ?? "")],
  ]) {
    const span = document.createElement("span");
    span.className = cls;
    span.textContent = text;
    row.append(span);
  }
  return row;
}

export function init(live) {
  const view = document.getElementById("logs-view");
  const status = document.getElementById("logs-status");
  const pauseButton = document.getElementById("logs-pause");
  const follow = document.getElementById("logs-follow");
  const levelSelect = document.getElementById("logs-level");
  const sourceSelect = document.getElementById("logs-source");
  const search = document.getElementById("logs-q");
  const banner = document.getElementById("logs-asterisk-banner");
  if (!view) return;

  const entries = []; // {id, ts, source, level, logger, message} or {skip: n}
  let lastId = 0;
  let paused = false;
  let waiting = 0; // lines received while paused
  let held = null; // topic frames held while a REST load is in flight
  let filters = { level: "", source: "", q: "" };
  let closed = false;

  function setStatus(text) {
    status.textContent = text;
  }

  function showState(asterisk) {
    if (!asterisk || !banner) return;
    banner.hidden = Boolean(asterisk.readable);
    const message = banner.querySelector("[data-part=message]");
    const error = banner.querySelector("[data-part=error]");
    if (message && asterisk.message) message.textContent = asterisk.message;
    if (error) error.textContent = asterisk.error ? `(${asterisk.error})` : "";
  }

  function atBottom() {
    return view.scrollHeight - view.scrollTop - view.clientHeight < 24;
  }

  function scrollDown() {
    if (follow.checked) view.scrollTop = view.scrollHeight;
  }

  function redraw() {
    const fragment = document.createDocumentFragment();
    for (const entry of entries) if (matches(entry, filters)) fragment.append(lineElement(entry));
    view.replaceChildren(fragment);
    scrollDown();
  }

  /** Add entries to the model; draw them unless paused. */
  function add(newEntries) {
    if (!newEntries.length) return;
    entries.push(...newEntries);
    const excess = entries.length - MAX_LINES;
    if (excess > 0) entries.splice(0, excess);
    if (paused) {
      waiting += newEntries.filter((entry) => !entry.skip).length;
      setStatus(`Paused · ${waiting} new line${waiting === 1 ? "" : "s"} waiting`);
      return;
    }
    if (excess > 0) {
      redraw();
      return;
    }
    const fragment = document.createDocumentFragment();
    for (const entry of newEntries) if (matches(entry, filters)) fragment.append(lineElement(entry));
    view.append(fragment);
    while (view.childElementCount > MAX_LINES) view.firstElementChild.remove();
    scrollDown();
  }

  function fresh(lines) {
    const out = [];
    for (const line of Array.isArray(lines) ? lines : []) {
      if (line && typeof line.id === "number" && line.id > lastId) {
        lastId = line.id;
        out.push(line);
      }
    }
    return out;
  }

  function applyFrame(frame) {
    const payload = frame.payload || {};
    if (frame.type === "logs.state") {
      showState(payload.asterisk);
      return;
    }
    if (frame.type !== "logs.lines") return;
    const batch = [];
    const skipped = Number(payload.skipped) || 0;
    if (skipped > 0) batch.push({ skip: skipped });
    batch.push(...fresh(payload.lines));
    add(batch);
  }

  async function load() {
    if (held) return;
    held = [];
    setStatus("Loading…");
    const { ok, data } = await api("GET", "/api/logs?limit=500");
    const frames = held;
    held = null;
    if (ok && data && Array.isArray(data.lines)) {
      const newest = data.lines.length ? data.lines[data.lines.length - 1].id : 0;
      if (newest < lastId) lastId = 0; // the server's lines were restarted: take them all again
      showState(data.asterisk);
      add(fresh(data.lines));
      if (!paused) setStatus("Live");
    } else {
      setStatus(data && data.detail ? `Cannot load the log: ${data.detail}` : "Cannot load the log.");
    }
    for (const frame of frames) applyFrame(frame);
  }

  live.onTopic("logs", (frame) => {
    if (closed) return;
    if (held) held.push(frame);
    else applyFrame(frame);
  });
  live.onTopicState((state) => {
    if (!state.topics?.includes("logs") && state.type !== "forbidden") return;
    if (state.type === "subscribed") load();
    else if (state.type === "forbidden" || state.type === "unsubscribed") {
      if (state.reason === "asked") return;
      closed = true;
      setStatus(state.type === "forbidden" ? "Not allowed to follow the logs (staff only)." : `Stopped: ${state.reason || "unsubscribed"}.`);
    }
  });
  live.subscribe(["logs"]);

  pauseButton.addEventListener("click", () => {
    paused = !paused;
    pauseButton.textContent = paused ? "Resume" : "Pause";
    pauseButton.setAttribute("aria-pressed", String(paused));
    view.dataset.paused = String(paused);
    if (paused) {
      waiting = 0;
      setStatus("Paused");
    } else {
      setStatus("Live");
      redraw();
    }
  });
  function refilter() {
    filters = { level: levelSelect.value, source: sourceSelect.value, q: search.value.trim() };
    redraw();
  }
  levelSelect.addEventListener("change", refilter);
  sourceSelect.addEventListener("change", refilter);
  let typing = null;
  search.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(refilter, 150);
  });
  document.getElementById("logs-controls").addEventListener("submit", (event) => event.preventDefault());
  follow.addEventListener("change", scrollDown);
  view.addEventListener("scroll", () => {
    follow.checked = atBottom();
  });
}

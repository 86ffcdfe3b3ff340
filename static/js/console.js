/**
 * The Console page (docs/console.md): Asterisk CLI commands through POST /api/pbx/console,
 * their output shown as text (never HTML), the user's history on the up and down arrows
 * (kept by the server: GET /api/pbx/console/history), a typed confirmation for destructive
 * commands (the server answers 428 until the same command comes back in `confirm`).
 *
 * Live, through the `console` and `presence` topics: "alice is typing…" for 3 s after
 * alice's last console.typing, "Also here: bob" for the other users whose pages include the
 * console, and the commands other admins run (console.command: who, what, how it ended).
 *
 * Bounds: the page keeps the last MAX_RESULTS results (and says so when it drops older
 * ones), the last MAX_ACTIVITY commands of others, the last MAX_HISTORY commands of history.
 */
import { api } from "./api.js";

export const MAX_RESULTS = 50;
export const MAX_ACTIVITY = 20;
export const MAX_HISTORY = 100;
export const TYPING_SHOWN_MS = 3000;
export const TYPING_SEND_MS = 1000;

const OUTCOME_TEXT = { ok: "ok", error: "error", timeout: "timed out", refused: "needs confirmation" };

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Names as a phrase: "alice", "alice and bob", "alice, bob and carol". */
export function names(list) {
  if (list.length <= 1) return list.join("");
  return `${list.slice(0, -1).join(", ")} and ${list[list.length - 1]}`;
}

/** The up/down arrow history: `entries` oldest first; `draft` is what was typed before going up. */
export class History {
  constructor(entries = []) {
    this.entries = entries.slice(-MAX_HISTORY);
    this.position = this.entries.length;
    this.draft = "";
  }

  add(command) {
    if (this.entries[this.entries.length - 1] !== command) this.entries.push(command);
    if (this.entries.length > MAX_HISTORY) this.entries.splice(0, this.entries.length - MAX_HISTORY);
    this.position = this.entries.length;
    this.draft = "";
  }

  /** The text for one step up (-1) or down (+1) from `current`; null when there is nowhere to go. */
  step(direction, current) {
    if (this.position === this.entries.length) this.draft = current;
    const next = this.position + direction;
    if (next < 0 || next > this.entries.length) return null;
    this.position = next;
    return next === this.entries.length ? this.draft : this.entries[next];
  }
}

export function init(live) {
  const root = document.getElementById("console");
  if (!root || root.dataset.enabled !== "true") return; // disabled or no PBX link: the page says so
  const me = document.body.dataset.user;
  const output = document.getElementById("console-output");
  const form = document.getElementById("console-form");
  const input = document.getElementById("console-input");
  const runButton = document.getElementById("console-run");
  const confirmBox = document.getElementById("console-confirm");
  const confirmText = document.getElementById("console-confirm-text");
  const confirmForm = document.getElementById("console-confirm-form");
  const confirmInput = document.getElementById("console-confirm-input");
  const here = document.getElementById("console-here");
  const typingNote = document.getElementById("console-typing");
  const activity = document.getElementById("console-activity");
  const activityEmpty = document.getElementById("console-activity-empty");

  const history = new History();
  let pending = null; // the destructive command waiting for its confirmation
  let dropped = 0;
  let lastTypingSent = 0;
  const typing = new Map(); // user -> timer that hides "user is typing…"

  // --- results ---------------------------------------------------------------------------

  function addResult(command) {
    document.getElementById("console-hint")?.remove();
    const entry = el("article", "console-result");
    entry.dataset.outcome = "running";
    const head = el("div", "console-result-head");
    head.append(el("code", "console-command", `> ${command}`), el("span", "console-outcome", "running…"));
    entry.append(head);
    output.append(entry);
    const results = output.querySelectorAll(".console-result");
    if (results.length > MAX_RESULTS) {
      dropped += results.length - MAX_RESULTS;
      for (const old of Array.from(results).slice(0, results.length - MAX_RESULTS)) old.remove();
      let note = document.getElementById("console-dropped");
      if (!note) {
        note = el("p", "muted console-dropped");
        note.id = "console-dropped";
        output.prepend(note);
      }
      note.textContent = `${dropped} older result${dropped === 1 ? "" : "s"} removed: this page keeps the last ${MAX_RESULTS}.`;
    }
    output.scrollTop = output.scrollHeight;
    return entry;
  }

  function finishResult(entry, { outcome, text, error, durationMs, truncated }) {
    entry.dataset.outcome = outcome;
    let label = OUTCOME_TEXT[outcome] || outcome;
    if (durationMs !== undefined && durationMs !== null) label += ` · ${durationMs} ms`;
    entry.querySelector(".console-outcome").textContent = label;
    if (error) entry.append(el("p", "console-error", error));
    // textContent: output is never HTML. An error that is the whole output is shown once.
    if (text && text.trim() !== (error || "").trim()) entry.append(el("pre", "console-text", text));
    if (truncated) entry.append(el("p", "console-truncated", "output truncated"));
    output.scrollTop = output.scrollHeight;
  }

  async function run(command, confirm) {
    runButton.disabled = true;
    const entry = addResult(command);
    const body = confirm === undefined ? { command } : { command, confirm };
    const { ok, status, data } = await api("POST", "/api/pbx/console", body);
    runButton.disabled = false;
    history.add(command);
    if (ok) {
      finishResult(entry, {
        outcome: data.outcome,
        text: data.output,
        error: data.error,
        durationMs: data.duration_ms,
        truncated: data.truncated,
      });
      return;
    }
    if (status === 428 && data && data.error === "confirmation_required") {
      const reason = data.fields?.confirm?.[0] || "needs a confirmation";
      finishResult(entry, { outcome: "refused", error: `Not run: it ${reason}. Type it again to run it.` });
      askConfirmation(command, reason);
      return;
    }
    const detail = (data && data.detail) || `The server answered ${status}.`;
    finishResult(entry, { outcome: "error", error: detail });
  }

  function askConfirmation(command, reason) {
    pending = command;
    confirmText.textContent = `${command} ${reason}. It runs only if you type it again.`;
    confirmInput.value = "";
    confirmBox.hidden = false;
    confirmInput.focus();
  }

  function closeConfirmation() {
    pending = null;
    confirmBox.hidden = true;
    input.focus();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const command = input.value.trim();
    if (!command || runButton.disabled) return;
    input.value = "";
    closeConfirmation();
    run(command);
  });

  confirmForm.addEventListener("submit", (event) => {
    event.preventDefault();
    if (pending === null) return;
    const command = pending;
    const confirm = confirmInput.value;
    closeConfirmation();
    run(command, confirm);
  });
  document.getElementById("console-confirm-cancel").addEventListener("click", closeConfirmation);
  confirmInput.addEventListener("keydown", (event) => {
    if (event.key === "Escape") closeConfirmation();
  });

  input.addEventListener("keydown", (event) => {
    if (event.key !== "ArrowUp" && event.key !== "ArrowDown") return;
    const text = history.step(event.key === "ArrowUp" ? -1 : 1, input.value);
    if (text === null) return;
    event.preventDefault();
    input.value = text;
    input.setSelectionRange(text.length, text.length);
  });

  input.addEventListener("input", () => {
    const now = Date.now();
    if (now - lastTypingSent < TYPING_SEND_MS) return;
    lastTypingSent = now;
    live.send({ type: "typing", topic: "console" });
  });

  api("GET", "/api/pbx/console/history").then(({ ok, data }) => {
    if (!ok || !data || !Array.isArray(data.results)) return;
    const older = data.results.map((row) => row.command).reverse();
    const typed = history.entries; // commands run while the history was loading come last
    history.entries = [];
    for (const command of [...older, ...typed]) history.add(command);
  });

  // --- who else is here ------------------------------------------------------------------

  function showTyping() {
    const users = [...typing.keys()];
    typingNote.hidden = users.length === 0;
    typingNote.textContent = users.length ? `${names(users)} ${users.length === 1 ? "is" : "are"} typing…` : "";
  }

  function stopTyping(user) {
    clearTimeout(typing.get(user));
    typing.delete(user);
    showTyping();
  }

  function addActivity({ user, command, outcome }) {
    const item = el("li");
    item.append(el("strong", "", user), document.createTextNode(" ran "), el("code", "", command));
    item.append(document.createTextNode(` — ${OUTCOME_TEXT[outcome] || outcome}`));
    activity.prepend(item);
    while (activity.children.length > MAX_ACTIVITY) activity.lastElementChild.remove();
    activityEmpty.hidden = true;
  }

  live.onTopic("console", (frame) => {
    const payload = frame.payload || {};
    if (typeof payload.user !== "string" || payload.user === me) return;
    if (frame.type === "console.typing") {
      clearTimeout(typing.get(payload.user));
      typing.set(
        payload.user,
        setTimeout(() => stopTyping(payload.user), TYPING_SHOWN_MS),
      );
      showTyping();
    } else if (frame.type === "console.command" && typeof payload.command === "string") {
      stopTyping(payload.user);
      addActivity(payload);
    }
  });

  live.onTopic("presence", (frame) => {
    if (frame.type !== "presence.state") return;
    const users = (frame.payload && Array.isArray(frame.payload.users) && frame.payload.users) || [];
    const others = users
      .filter((u) => u && u.username !== me && Array.isArray(u.pages) && u.pages.includes("console"))
      .map((u) => u.username);
    here.hidden = others.length === 0;
    here.textContent = others.length ? `Also here: ${others.join(", ")}` : "";
  });

  live.onTopicState((state) => {
    if (state.type === "forbidden") {
      here.hidden = false;
      here.textContent = `Live console updates refused: ${state.reason || "not allowed"}`;
    }
  });

  live.subscribe(["console", "presence"]);
  input.focus();
}

/**
 * The page's one live connection (our equivalent of the seed's useWebSocket composable
 * and its store). Every page uses it; see docs/live-events.md for the protocol.
 *
 * - Authenticates with the page's session cookie: no token in the URL or in page scripts.
 * - Listeners by event type, a wildcard ("*"), state listeners and resync listeners.
 * - Reconnects with exponential backoff and jitter (1 s doubling, capped at 30 s); after
 *   10 failed attempts it stops in the "offline" state until reconnectNow() is called.
 * - Resumes from the last seq it saw (?last_seq=N), so no event is lost across a reconnect;
 *   on "resync" (or a gap it detects itself) it asks the page to reload its data.
 * - An auth close code (4001/4002/4003) sends the user to the login page.
 * - Presence (docs/live-events.md "Presence"): setPresence({page, editing}) says where this
 *   page is and what it edits, now and again after every reconnect, with the page's tab id.
 * - Topics (opt-in, not numbered: docs/live-events.md "Topics"): subscribe(["logs"]) asks
 *   for them now and again after every reconnect; onTopic(topic, fn) gets their frames, and
 *   onTopicState(fn) the server's subscribed / unsubscribed / forbidden answers.
 */

const CONTROL_TYPES = new Set(["welcome", "pong", "error", "resync", "auth.ok", "subscribed", "unsubscribed"]);
const AUTH_CLOSE_CODES = new Set([4001, 4002, 4003]);
// Connection limits (live.limits): too fast, too many sockets for the user, server full.
const LIMIT_CLOSE_CODES = new Set([4029, 4030, 4031]);
export const MAX_ATTEMPTS = 10;
const BASE_DELAY_MS = 1000;
const MAX_DELAY_MS = 30000;

/** Delay before reconnect attempt n (1-based): 1 s doubling, capped at 30 s, with jitter. */
export function backoffDelay(attempt, random = Math.random) {
  const ceiling = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** (attempt - 1));
  return ceiling / 2 + random() * (ceiling / 2);
}

export class LiveConnection {
  /**
   * lastSeq: the stream position the page's own data is valid at (rendered by the server,
   * <body data-live-seq>): the first connect resumes from it, so a change made while the
   * page was loading is replayed instead of lost. Null: start from the live stream.
   */
  constructor({ url, loginUrl = "/login/", lastSeq = null }) {
    this.url = url;
    this.loginUrl = loginUrl;
    this.lastSeq = lastSeq;
    this.attempt = 0;
    this.status = "connecting";
    this.since = null; // when the page stopped being live (for the stale notice)
    this.refused = null; // the server's reason, when a connection limit refused the socket
    this.socket = null;
    this.timer = null;
    this.closing = false;
    this.listeners = new Map();
    this.stateListeners = new Set();
    this.resyncListeners = new Set();
    this.topics = new Set();
    this.topicListeners = new Map();
    this.topicStateListeners = new Set();
    this.presence = null;
    // This page's id for presence: the same across its reconnects, so a reconnect is not a new tab.
    this.tab = Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  /** Where this page is and what it edits ({page, editing}); kept across reconnects. */
  setPresence(presence) {
    this.presence = { ...this.presence, ...presence };
    this.#sendPresence();
  }

  #sendPresence() {
    if (this.presence) this.send({ type: "presence", tab: this.tab, ...this.presence });
  }

  /** Subscribe to topics (kept across reconnects). */
  subscribe(topics) {
    for (const topic of topics) this.topics.add(topic);
    this.send({ type: "subscribe", topics: [...topics] });
  }

  unsubscribe(topics) {
    for (const topic of topics) this.topics.delete(topic);
    this.send({ type: "unsubscribe", topics: [...topics] });
  }

  onTopic(topic, listener) {
    if (!this.topicListeners.has(topic)) this.topicListeners.set(topic, new Set());
    this.topicListeners.get(topic).add(listener);
    return () => this.topicListeners.get(topic).delete(listener);
  }

  /** listener({type: "subscribed" | "unsubscribed" | "forbidden", topics, reason}). */
  onTopicState(listener) {
    this.topicStateListeners.add(listener);
    return () => this.topicStateListeners.delete(listener);
  }

  /** Listen to one event type, or "*" for every stream event. Returns an unsubscribe function. */
  on(type, listener) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(listener);
    return () => this.listeners.get(type).delete(listener);
  }

  onState(listener) {
    this.stateListeners.add(listener);
    listener(this.state());
    return () => this.stateListeners.delete(listener);
  }

  /** Called when the page must reload its data from the REST API. */
  onResync(listener) {
    this.resyncListeners.add(listener);
    return () => this.resyncListeners.delete(listener);
  }

  state() {
    return { status: this.status, attempt: this.attempt, since: this.since, maxAttempts: MAX_ATTEMPTS, refused: this.refused };
  }

  connect() {
    clearTimeout(this.timer);
    this.closing = false;
    // batch=1: frames the server has at once (a bulk change) come as one JSON array.
    const query = this.lastSeq === null ? "?batch=1" : `?batch=1&last_seq=${this.lastSeq}`;
    const socket = new WebSocket(this.url + query, ["rayanpbx"]);
    this.socket = socket;
    socket.addEventListener("message", (event) => this.#receive(event.data));
    socket.addEventListener("close", (event) => this.#closed(socket, event));
  }

  /** Try again now (the "Reconnect" control), resetting the attempt counter. */
  reconnectNow() {
    this.attempt = 0;
    this.#setStatus("reconnecting");
    this.connect();
  }

  /** Close for good (logout, page leaving). */
  close() {
    this.closing = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close(1000);
  }

  send(frame) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(frame));
  }

  #receive(data) {
    let parsed;
    try {
      parsed = JSON.parse(data);
    } catch {
      return;
    }
    if (Array.isArray(parsed)) for (const frame of parsed) this.#frame(frame);
    else this.#frame(parsed);
  }

  #frame(frame) {
    if (typeof frame.topic === "string") {
      // A topic's frame: not numbered, outside the stream's order and resume.
      for (const listener of this.topicListeners.get(frame.topic) || []) listener(frame);
      return;
    }
    if (CONTROL_TYPES.has(frame.type)) {
      this.#control(frame);
      return;
    }
    if (this.lastSeq !== null && frame.seq <= this.lastSeq) return; // already seen
    if (this.lastSeq !== null && frame.seq > this.lastSeq + 1) {
      // A gap the server did not announce: never show data with a hole in it.
      this.lastSeq = frame.seq;
      this.#resync();
      return;
    }
    // (A "restricted" frame, in place of an event this user may not see, only moves lastSeq
    // on: no page listens to it. docs/live-events.md "Who sees what".)
    this.lastSeq = frame.seq;
    for (const type of [frame.type, "*"]) {
      for (const listener of this.listeners.get(type) || []) listener(frame);
    }
  }

  #control(frame) {
    if (frame.type === "welcome") {
      if (this.lastSeq === null) this.lastSeq = frame.seq;
      this.attempt = 0;
      this.since = null;
      this.refused = null;
      this.user = frame.payload.user;
      this.#setStatus("connected");
      this.#sendPresence();
      if (this.topics.size) this.send({ type: "subscribe", topics: [...this.topics] });
    } else if (frame.type === "subscribed" || frame.type === "unsubscribed") {
      this.#topicState({ type: frame.type, topics: frame.payload.topics, reason: frame.payload.reason });
    } else if (frame.type === "error" && frame.payload.code === "forbidden_topic") {
      this.#topicState({ type: "forbidden", topics: [], reason: frame.payload.message });
    } else if (frame.type === "resync") {
      // The user's rights changed (docs/live-events.md "Who sees what"): the page's
      // sections were drawn for the old ones, so it is loaded again, whole.
      if (frame.payload.reload) {
        location.reload();
        return;
      }
      this.lastSeq = frame.seq;
      this.#resync();
    }
  }

  #topicState(state) {
    for (const listener of this.topicStateListeners) listener(state);
  }

  #resync() {
    for (const listener of this.resyncListeners) listener();
  }

  #closed(socket, event) {
    if (socket !== this.socket || this.closing) return;
    if (AUTH_CLOSE_CODES.has(event.code)) {
      this.#setStatus("offline");
      const next = encodeURIComponent(location.pathname + location.search);
      location.assign(`${this.loginUrl}?next=${next}`);
      return;
    }
    if (this.since === null) this.since = new Date();
    this.refused = LIMIT_CLOSE_CODES.has(event.code) ? event.reason || "refused by the server" : null;
    this.attempt += 1;
    if (this.attempt > MAX_ATTEMPTS) {
      this.attempt = MAX_ATTEMPTS;
      this.#setStatus("offline");
      return;
    }
    this.#setStatus("reconnecting");
    this.timer = setTimeout(() => this.connect(), backoffDelay(this.attempt));
  }

  #setStatus(status) {
    this.status = status;
    const state = this.state();
    for (const listener of this.stateListeners) listener(state);
  }
}

export function liveUrl() {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
}

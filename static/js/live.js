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
 */

const CONTROL_TYPES = new Set(["welcome", "pong", "error", "resync", "auth.ok"]);
const AUTH_CLOSE_CODES = new Set([4001, 4002, 4003]);
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
    this.socket = null;
    this.timer = null;
    this.closing = false;
    this.listeners = new Map();
    this.stateListeners = new Set();
    this.resyncListeners = new Set();
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
    return { status: this.status, attempt: this.attempt, since: this.since, maxAttempts: MAX_ATTEMPTS };
  }

  connect() {
    clearTimeout(this.timer);
    this.closing = false;
    const query = this.lastSeq === null ? "" : `?last_seq=${this.lastSeq}`;
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
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
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
      this.user = frame.payload.user;
      this.#setStatus("connected");
    } else if (frame.type === "resync") {
      this.lastSeq = frame.seq;
      this.#resync();
    }
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

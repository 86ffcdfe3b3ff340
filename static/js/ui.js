/** Small shared UI helpers: toasts and the connection-state badge. */

export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  if (!box) return;
  const item = document.createElement("div");
  item.className = `toast ${kind}`;
  item.textContent = message;
  box.append(item);
  setTimeout(() => item.classList.add("leaving"), 3500);
  setTimeout(() => item.remove(), 4000);
}

const LABELS = {
  connecting: () => "Connecting…",
  connected: () => "Live",
  reconnecting: (s) =>
    s.refused
      ? `Refused: ${s.refused}. Retrying (attempt ${s.attempt} of ${s.maxAttempts})…`
      : `Reconnecting (attempt ${s.attempt} of ${s.maxAttempts})…`,
  offline: (s) => (s.refused ? `Offline: ${s.refused}` : "Offline"),
};

/** Show the connection state in the header, and the stale-data banner while not live. */
export function initStatus(live) {
  const box = document.getElementById("live-status");
  if (!box) return;
  const label = box.querySelector(".label");
  const button = document.getElementById("live-reconnect");
  const banner = document.getElementById("stale-banner");
  const since = document.getElementById("stale-since");
  button.addEventListener("click", () => live.reconnectNow());
  live.onState((state) => {
    box.dataset.state = state.status;
    label.textContent = LABELS[state.status](state);
    button.hidden = state.status !== "offline";
    const stale = state.since !== null && state.status !== "connected";
    banner.hidden = !stale;
    if (stale) {
      since.dateTime = state.since.toISOString();
      since.textContent = state.since.toLocaleTimeString();
    }
  });
}

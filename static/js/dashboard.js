/** The dashboard: counts from status_update, connection state, and recent changes. */
import { api } from "./api.js";

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

/**
 * The one entry module: starts the live connection, what every page shows (the connection
 * state, the PBX link's banners) and the page's own module, chosen by <body data-page>.
 * Each page module exports init(live).
 */
import { LiveConnection, liveUrl } from "./live.js";
import { initPbx } from "./pbx.js";
import { initPresence } from "./presence.js";
import { initStatus } from "./ui.js";

const PAGES = {
  dashboard: () => import("./dashboard.js"),
  extensions: () => import("./listpage.js"),
  trunks: () => import("./listpage.js"),
  calls: () => import("./calls.js"),
  logs: () => import("./logs.js"),
  console: () => import("./console.js"),
  traffic: () => import("./traffic.js"),
  audit: () => import("./audit.js"),
};

async function main() {
  const page = document.body.dataset.page;
  if (!PAGES[page]) return; // the login page has no live connection
  const rendered = document.body.dataset.liveSeq; // the position the page's data is valid at
  const live = new LiveConnection({ url: liveUrl(), lastSeq: rendered ? Number(rendered) : null });
  initStatus(live);
  initPbx(live);
  initPresence(live);
  document.getElementById("logout-form")?.addEventListener("submit", () => live.close());
  window.addEventListener("pagehide", () => live.close());
  const module = await PAGES[page]();
  module.init(live);
  live.connect();
}

main();

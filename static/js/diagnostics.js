/**
 * The extensions list's diagnostics dialog: for one extension, its contacts (URI, address,
 * user agent, RTT, expiry), the failed SIP logins with its number, and, when the phone is not
 * registered or not answering, what to check.
 *
 * It draws from the live state the page already follows (the registrations, kept by
 * listpage.js) plus the failed logins (the page's snapshot, then security.sip_auth_failed
 * events), and redraws while open whenever either changes. Text only: nothing from the PBX
 * or a phone is ever parsed as HTML.
 */
import { follow, formatRtt, formatTime, serverNow, syncClock } from "./calls.js";
import { pbxStatus } from "./pbx.js";

const STATE_WORDS = { registered: "Registered", unreachable: "Unreachable", unregistered: "Not registered" };
const MAX_FAILURES = 50; // kept for the dialog, the newest first (the server keeps as many)
const RECENT_FAILURE_S = 3600; // a failed login this recent is named as a likely cause

const failureKey = (f) => `${f.username}|${f.remote_ip}|${f.first_at}`;

/** "in 4 min", "in 35 s", "expired": how long until an ISO time, on the server's clock. */
function until(iso) {
  const at = Date.parse(iso);
  if (Number.isNaN(at)) return "";
  const seconds = Math.round((at - serverNow()) / 1000);
  if (seconds <= 0) return "expired";
  return seconds < 120 ? `in ${seconds} s` : `in ${Math.round(seconds / 60)} min`;
}

/**
 * What an admin should check for this extension, most likely cause first; [] when the
 * phone is registered and answering. `row` has number, enabled and transport.
 */
export function hints({ row, registration, failures, status, now }) {
  const out = [];
  const state = registration?.state || "unregistered";
  if (status?.link && status.link.state !== "connected") {
    out.push(
      "RayanPBX is not connected to Asterisk right now, so this state may be out of date and changes are not applied. See the banner at the top of the page.",
    );
  }
  if (!row.enabled) {
    out.push("This extension is disabled: Asterisk refuses its registrations. Enable it to let the phone register.");
  }
  const label = `extension ${row.number}`;
  for (const error of status?.apply?.state === "failed" ? status.apply.errors || [] : []) {
    if (error.object === label || error.object === "configuration") {
      out.push(`The last apply failed for ${error.object}: ${error.message}`);
    }
  }
  const recent = failures.filter((f) => now - Date.parse(f.last_at) < RECENT_FAILURE_S * 1000);
  if (recent.length) {
    const sources = [...new Set(recent.map((f) => f.remote_ip || "?"))].join(", ");
    const attempts = recent.reduce((sum, f) => sum + (Number(f.attempts) || 1), 0);
    out.push(
      `${attempts} failed login${attempts === 1 ? "" : "s"} from ${sources} in the last hour: a phone there is using a wrong password. ` +
        "Enter this extension's SIP password on it again, or set a new one with Edit. If you do not know that address, someone may be guessing passwords.",
    );
  }
  if (state === "unreachable") {
    out.push(
      "The phone registered but does not answer Asterisk's keep-alive checks (qualify). This is usually NAT or a firewall between them: turn on the phone's NAT keep-alive, and check that the SIP and RTP ports are open towards it.",
    );
  } else if (state === "unregistered" && row.enabled) {
    out.push(
      `On the phone's SIP account, check: the server (registrar) is this PBX's address, transport ${row.transport || "UDP"}; ` +
        `the user name and the authentication name are both ${row.number}; the password is this extension's SIP password; registration is turned on.`,
    );
    out.push(
      "Check that the phone can reach the PBX: on the same network, or through a firewall that lets SIP (usually port 5060) through. The phone's own status page often says why its registration failed.",
    );
  }
  return out;
}

/**
 * Wire the dialog into the list: a click on a row's status opens it. `registrationOf(number)`
 * gives the current registration. Returns {refresh(number)}, for listpage.js to call when an
 * extension's registration or row changes (no number: after a reload of them all).
 */
export function initDiagnostics(live, { tbody, snapshot, registrationOf }) {
  const dialog = document.getElementById("diag-dialog");
  if (!dialog) return { refresh() {} };
  const part = (name) => dialog.querySelector(`[data-part="${name}"]`);
  const contactRows = dialog.querySelector("#diag-contacts tbody");
  const failureList = dialog.querySelector("#diag-failures");
  let failures = [];
  let openRow = null; // the <tr> whose diagnostics are shown

  syncClock(live, snapshot.server_time);
  // Failed logins are for staff (rayanpbx/audiences.py): the page embeds them only then.
  if ("auth_failures" in snapshot) follow(live, {
    snapshot: { seq: snapshot.seq, auth_failures: snapshot.auth_failures },
    path: "/api/pbx/security",
    types: ["security.sip_auth_failed"],
    load: (document) => {
      failures = (document.auth_failures || []).slice(0, MAX_FAILURES);
      draw();
    },
    apply: (frame) => {
      const key = failureKey(frame.payload);
      failures = [frame.payload, ...failures.filter((f) => failureKey(f) !== key)].slice(0, MAX_FAILURES);
      if (openRow && frame.payload.username === openRow.dataset.liveKey) draw();
    },
  });

  function rowFacts(row) {
    return {
      number: row.dataset.liveKey,
      name: row.querySelector(".name")?.textContent || "",
      enabled: row.dataset.enabled === "true",
      transport: row.querySelector('[data-label="Transport"]')?.textContent.trim() || "",
    };
  }

  function cell(text, title) {
    const td = document.createElement("td");
    td.textContent = text;
    if (title) td.title = title;
    return td;
  }

  function draw() {
    if (!openRow) return;
    // The row may have been re-rendered (a live update) since the dialog opened.
    const current = [...tbody.rows].find((r) => r.dataset.liveKey === openRow.dataset.liveKey);
    if (current) openRow = current;
    const row = rowFacts(openRow);
    const registration = registrationOf(row.number);
    const state = registration?.state || "unregistered";
    part("number").textContent = row.number;
    part("name").textContent = row.enabled ? row.name : `${row.name} (disabled)`;
    part("reg").dataset.state = state;
    part("state").textContent = STATE_WORDS[state] || state;

    const contacts = registration?.contacts || [];
    contactRows.replaceChildren(
      ...contacts.map((c) => {
        const tr = document.createElement("tr");
        const address = c.ip ? `${c.ip}${c.port ? `:${c.port}` : ""}` : "—";
        tr.append(
          cell(address, c.uri),
          cell(c.user_agent || "—"),
          cell(formatRtt(c.rtt_ms) || (state === "unreachable" ? "no answer" : "—")),
          cell(c.expires_at ? `${until(c.expires_at)} (${formatTime(c.expires_at)})` : "—"),
        );
        const uri = document.createElement("div");
        uri.className = "sub";
        uri.textContent = c.uri;
        tr.cells[0].append(uri);
        return tr;
      }),
    );
    dialog.querySelector("#diag-contacts").hidden = contacts.length === 0;
    dialog.querySelector("#diag-no-contacts").hidden = contacts.length > 0;

    const mine = failures.filter((f) => f.username === row.number);
    failureList.replaceChildren(
      ...mine.map((f) => {
        const li = document.createElement("li");
        const n = Number(f.attempts) || 1;
        li.textContent = `${n} attempt${n === 1 ? "" : "s"} from ${f.remote_ip || "?"}, last ${formatTime(f.last_at)}`;
        return li;
      }),
    );
    dialog.querySelector("#diag-no-failures").hidden = mine.length > 0;

    const advice = hints({ row, registration, failures: mine, status: pbxStatus(), now: serverNow() });
    dialog.querySelector("#diag-hints").replaceChildren(
      ...advice.map((text) => {
        const li = document.createElement("li");
        li.textContent = text;
        return li;
      }),
    );
    dialog.querySelector("#diag-hints-box").hidden = advice.length === 0;
  }

  tbody.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action=diagnose]");
    if (!button) return;
    openRow = button.closest("tr");
    draw();
    dialog.showModal();
  });
  dialog.addEventListener("close", () => {
    const number = openRow?.dataset.liveKey;
    openRow = null;
    // Back to the button that opened it (the row may have been replaced meanwhile).
    const row = [...tbody.rows].find((r) => r.dataset.liveKey === number);
    row?.querySelector("button[data-action=diagnose]")?.focus();
  });

  return {
    refresh(number = undefined) {
      if (openRow && (number === undefined || openRow.dataset.liveKey === number)) draw();
    },
  };
}

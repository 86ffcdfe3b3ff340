/**
 * Create, edit, delete and toggle from a list page, through the REST API.
 *
 * Validation errors from the API are shown next to their fields. A row being edited is
 * never overwritten silently: if someone else changes or deletes it meanwhile, the dialog
 * says so and keeps the user's unsaved input until they choose to load the latest values.
 * While the dialog is open on a row, the page's presence says so: other pages mark the row
 * "alice is editing", and a second editor's dialog warns that someone else has it open.
 *
 * Edit conflicts: a save sends `If-Match` with the version the dialog loaded. If someone else
 * saved in between, the API answers 412 with the current object, and the dialog shows each
 * field that differs (theirs against yours) with two ways out: keep mine (save again over
 * the new version) or take theirs (load the current values into the form).
 */
import { api } from "./api.js";
import { editingText, editorsOf, onPresence, setEditing } from "./presence.js";
import { toast } from "./ui.js";

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

/** A conditional write (`If-Match: etag`), answered like api(): {ok, status, data}. */
async function conditionalWrite(method, path, body, etag) {
  let response;
  try {
    response = await fetch(path, {
      method,
      credentials: "same-origin",
      headers: {
        Accept: "application/json",
        "Content-Type": "application/json",
        "X-CSRFToken": csrfToken(),
        "If-Match": etag,
      },
      body: JSON.stringify(body),
    });
  } catch {
    return { ok: false, status: 0, data: { error: "network", detail: "The server cannot be reached. Try again." } };
  }
  const data = await response.json().catch(() => null);
  if (response.status === 401) location.assign(`/login/?next=${encodeURIComponent(location.pathname)}`);
  return { ok: response.ok, status: response.status, data };
}

/** The ETag the API sends for an object (rayanpbx/api/viewsets.py). */
const etagOf = (data) => `"${data.id}-${data.version}"`;

export function initEditor({ live, slug, topic, tbody, refreshRow }) {
  const dialog = document.getElementById("edit-dialog");
  const form = document.getElementById("edit-form");
  const title = document.getElementById("edit-title");
  const conflict = document.getElementById("edit-conflict");
  const formError = document.getElementById("form-error");
  const saveButton = document.getElementById("save-button");
  const codecList = document.getElementById("codec-list");
  const codecOrder = [...codecList.children];
  const noun = topic[0].toUpperCase() + topic.slice(1);
  const defaults = snapshot();
  let editing = null; // {id, label, key, loaded} while the dialog edits an existing row (loaded: its values)
  let saving = false;

  function snapshot() {
    return [...form.elements].filter((e) => e.name).map((e) => [e, e.type === "checkbox" ? e.checked : e.value]);
  }

  function clearErrors() {
    formError.hidden = true;
    formError.textContent = "";
    for (const p of form.querySelectorAll(".field-error")) p.textContent = "";
    for (const e of form.querySelectorAll("[aria-invalid]")) e.removeAttribute("aria-invalid");
  }

  function showErrors(data) {
    const fields = data?.fields || {};
    const unplaced = [];
    let first = null;
    for (const [name, messages] of Object.entries(fields)) {
      const slot = form.querySelector(`[data-error-for="${name}"]`);
      const text = (Array.isArray(messages) ? messages : [messages]).flat(2).map(String).join(" ");
      if (!slot) {
        unplaced.push(text);
        continue;
      }
      slot.textContent = text;
      const input = form.elements[name];
      const element = input instanceof RadioNodeList ? input[0] : input;
      element?.setAttribute("aria-invalid", "true");
      first ??= element;
    }
    if (unplaced.length || !Object.keys(fields).length) {
      formError.textContent = unplaced.join(" ") || data?.detail || "Could not save. Try again.";
      formError.hidden = false;
    }
    (first || formError).focus?.();
  }

  function orderCodecs(selected) {
    const chosen = selected.map((c) => codecOrder.find((l) => l.querySelector("input").value === c)).filter(Boolean);
    for (const label of [...chosen, ...codecOrder.filter((l) => !chosen.includes(l))]) codecList.append(label);
    for (const label of codecOrder) label.querySelector("input").checked = chosen.includes(label);
  }

  function fill(data) {
    for (const element of form.elements) {
      if (!element.name || element.name === "codecs" || element.name === "secret") continue;
      if (element.type === "checkbox") element.checked = Boolean(data[element.name]);
      else element.value = data[element.name] ?? "";
    }
    orderCodecs(data.codecs || []);
    form.elements.secret.value = "";
  }

  function collect() {
    const body = {};
    for (const element of form.elements) {
      if (!element.name || element.name === "codecs") continue;
      if (element.type === "checkbox") body[element.name] = element.checked;
      else if (element.dataset.type === "int" && element.value.trim() !== "") body[element.name] = Number(element.value);
      else body[element.name] = element.value;
    }
    body.codecs = [...codecList.querySelectorAll("input:checked")].map((input) => input.value);
    if (!body.secret) delete body.secret;
    return body;
  }

  function setSecretHint(mode) {
    const hint = document.getElementById("h-secret");
    hint.textContent = hint.dataset[mode];
  }

  function open(mode) {
    clearErrors();
    conflict.hidden = true;
    stale.hidden = true;
    saveButton.disabled = false;
    setSecretHint(mode);
    const number = form.elements.extension_number;
    if (number) number.readOnly = mode === "edit";
    dialog.showModal();
    form.querySelector("input:not([readonly]):not([type=checkbox])")?.focus();
  }

  function openCreate() {
    editing = null;
    for (const [element, value] of defaults) {
      if (element.type === "checkbox") element.checked = value;
      else element.value = value;
    }
    orderCodecs(defaults.filter(([e, v]) => e.name === "codecs" && v).map(([e]) => e.value));
    title.textContent = `Add ${topic}`;
    open("create");
  }

  async function openEdit(row) {
    const { ok, data } = await api("GET", `/api/${slug}/${row.dataset.id}`);
    if (!ok) {
      toast(data?.detail || `This ${topic} no longer exists.`, "error");
      return;
    }
    editing = {
      id: Number(row.dataset.id),
      label: row.dataset.label,
      key: `${topic}:${row.dataset.liveKey}`,
      loaded: data,
    };
    fill(data);
    title.textContent = `Edit ${row.dataset.label}`;
    open("edit");
    setEditing(editing.key);
    warnOthers();
  }

  // Someone else has this row's edit dialog open too: say who, before anyone saves.
  const others = document.getElementById("edit-others");
  function warnOthers() {
    const names = editing && dialog.open ? editorsOf(editing.key) : [];
    others.hidden = !names.length;
    others.textContent = names.length
      ? `${editingText(names)} this ${topic} too: whoever saves last overwrites the other's changes.`
      : "";
  }
  onPresence(warnOthers);

  // The conflict view: the save was refused (412) because the object changed since it loaded.
  const stale = document.getElementById("edit-stale");
  const staleRows = document.getElementById("edit-stale-rows");

  function labelOf(name) {
    const element = form.elements[name];
    const input = element instanceof RadioNodeList ? element[0] : element;
    const label = input?.id ? form.querySelector(`label[for="${input.id}"]`) : null;
    return (label?.textContent || name).trim();
  }

  function shown(value) {
    if (Array.isArray(value)) return value.join(", ") || "(none)";
    if (typeof value === "boolean") return value ? "yes" : "no";
    if (value === null || value === undefined || value === "") return "(empty)";
    return String(value);
  }

  function showStale(current) {
    const yours = collect();
    staleRows.replaceChildren();
    for (const [name, mine] of Object.entries(yours)) {
      if (name === "secret" || !(name in current)) continue;
      const theirs = current[name];
      if (JSON.stringify(theirs) === JSON.stringify(mine)) continue;
      const tr = document.createElement("tr");
      tr.dataset.field = name;
      for (const text of [labelOf(name), shown(theirs), shown(mine)]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.append(td);
      }
      staleRows.append(tr);
    }
    const count = staleRows.children.length;
    stale.querySelector(".msg").textContent =
      `Not saved: someone else saved this ${topic} after you opened it. ` +
      (count ? `${count} field${count === 1 ? " differs" : "s differ"}:` : "Their values and yours are the same.");
    conflict.hidden = true;
    stale.hidden = false;
    stale.querySelector("[data-action=keep-mine]").focus();
  }

  stale.querySelector("[data-action=keep-mine]").addEventListener("click", () => {
    if (!editing?.current) return;
    editing.loaded = editing.current; // save over their version, on purpose
    stale.hidden = true;
    form.requestSubmit();
  });
  stale.querySelector("[data-action=take-theirs]").addEventListener("click", () => {
    if (!editing?.current) return;
    editing.loaded = editing.current;
    fill(editing.current);
    stale.hidden = true;
    clearErrors();
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    saving = true;
    saveButton.disabled = true;
    const body = collect();
    const { ok, status, data } = editing
      ? await conditionalWrite("PATCH", `/api/${slug}/${editing.id}`, body, etagOf(editing.loaded))
      : await api("POST", `/api/${slug}`, body);
    saving = false;
    saveButton.disabled = false;
    if (editing && status === 412 && data?.current) {
      editing.current = data.current;
      showStale(data.current);
      return;
    }
    if (!ok) {
      showErrors(data);
      return;
    }
    dialog.close();
    refreshRow(data.id);
    toast(`${noun} ${editing ? "saved" : "added"}.`, "success");
    if (!editing && data.secret) showSecret(data.secret);
    editing = null;
  });

  function showSecret(secret) {
    const secretDialog = document.getElementById("secret-dialog");
    document.getElementById("secret-value").textContent = secret;
    secretDialog.showModal();
    secretDialog.addEventListener("close", () => (document.getElementById("secret-value").textContent = ""), { once: true });
  }
  document.getElementById("copy-secret").addEventListener("click", () =>
    navigator.clipboard?.writeText(document.getElementById("secret-value").textContent).then(() => toast("Copied.")),
  );

  for (const button of dialog.querySelectorAll("[data-action=close]")) button.addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => {
    setEditing(null);
    editing = null;
    warnOthers();
  });
  conflict.querySelector("[data-action=reload-form]").addEventListener("click", async () => {
    if (!editing) return;
    const { ok, data } = await api("GET", `/api/${slug}/${editing.id}`);
    if (ok) {
      editing.loaded = data;
      fill(data);
      conflict.hidden = true;
      stale.hidden = true;
    }
  });

  // Someone else changed or deleted the row being edited: say so, keep the user's input.
  live.on(`${topic}.updated`, (frame) => {
    if (!editing || saving || frame.payload.id !== editing.id || !dialog.open) return;
    conflict.querySelector(".msg").textContent =
      `Someone else changed this ${topic} while you were editing it. Your unsaved changes are kept; saving will show what they changed and let you choose.`;
    conflict.querySelector("[data-action=reload-form]").hidden = false;
    conflict.hidden = false;
  });
  live.on(`${topic}.deleted`, (frame) => {
    if (!editing || frame.payload.id !== editing.id || !dialog.open) return;
    conflict.querySelector(".msg").textContent = `Someone else deleted this ${topic} while you were editing it.`;
    conflict.querySelector("[data-action=reload-form]").hidden = true;
    conflict.hidden = false;
    saveButton.disabled = true;
  });

  // Delete, with a confirmation.
  const confirmDialog = document.getElementById("confirm-dialog");
  let pendingDelete = null;
  confirmDialog.querySelector("[data-action=close]").addEventListener("click", () => confirmDialog.close("cancel"));
  confirmDialog.addEventListener("close", async () => {
    const row = pendingDelete;
    pendingDelete = null;
    if (!row || confirmDialog.returnValue !== "confirm") return;
    const { ok, status, data } = await api("DELETE", `/api/${slug}/${row.dataset.id}`);
    if (ok || status === 404) {
      refreshRow(Number(row.dataset.id)); // 404 now: the row goes, counts follow
      toast(`${row.dataset.label[0].toUpperCase()}${row.dataset.label.slice(1)} deleted.`, "success");
    } else {
      toast(data?.detail || "Could not delete.", "error");
    }
  });

  tbody.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    const row = button?.closest("tr");
    if (!row) return;
    if (button.dataset.action === "edit") openEdit(row);
    if (button.dataset.action === "delete") {
      pendingDelete = row;
      document.getElementById("confirm-title").textContent = `Delete ${row.dataset.label}?`;
      document.getElementById("confirm-text").textContent = `This removes ${row.dataset.label} from the PBX. It cannot be undone.`;
      confirmDialog.returnValue = "";
      confirmDialog.showModal();
    }
    if (button.dataset.action === "toggle") {
      button.disabled = true;
      const { ok, data } = await api("POST", `/api/${slug}/${row.dataset.id}/toggle`);
      button.disabled = false;
      if (ok) refreshRow(data.id);
      else toast(data?.detail || "Could not change it.", "error");
    }
  });
  document.querySelector("[data-action=create]")?.addEventListener("click", openCreate);
}

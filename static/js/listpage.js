/**
 * A list page (extensions or trunks): the table follows every change live.
 *
 * Rows are rendered by the server (one template include per row). On an event the page
 * fetches just that row's fragment and puts it in its sorted place; a deleted row goes;
 * on resync the page reloads the rows in one request. Search, status filter and column
 * sorting happen here, on the rows already shown.
 */
import { fetchFragment } from "./api.js";
import { initEditor } from "./editor.js";

export function init(live) {
  const table = document.getElementById("list");
  const { slug, topic } = table.dataset;
  const tbody = document.getElementById("rows");
  const search = document.getElementById("search");
  const statusFilter = document.getElementById("status-filter");
  const emptyState = document.getElementById("empty");
  const rowCount = document.getElementById("row-count");
  const headers = [...table.querySelectorAll("button.sort")];
  const initial = headers.find((b) => b.getAttribute("aria-sort")) || headers[0];
  let sort = { key: initial.dataset.sortKey, dir: 1 };

  const rowId = (id) => `${topic}-${id}`;
  const keyOf = (row) => row.dataset[`k${sort.key[0].toUpperCase()}${sort.key.slice(1)}`] || "";
  const compare = (a, b) =>
    sort.dir * keyOf(a).localeCompare(keyOf(b), undefined, { numeric: true }) ||
    Number(a.dataset.id) - Number(b.dataset.id);

  function visible(row) {
    const query = search.value.trim().toLowerCase();
    const status = statusFilter.value;
    const enabled = row.dataset.enabled === "true";
    return (!query || row.dataset.search.includes(query)) && (status === "all" || (status === "enabled") === enabled);
  }

  function refreshView() {
    let shown = 0;
    for (const row of tbody.rows) {
      row.hidden = !visible(row);
      if (!row.hidden) shown += 1;
    }
    rowCount.textContent = tbody.rows.length;
    emptyState.hidden = tbody.rows.length > 0;
    table.dataset.shown = shown;
  }

  function place(row) {
    const before = [...tbody.rows].find((other) => other !== row && compare(row, other) < 0);
    tbody.insertBefore(row, before || null);
  }

  function flash(row) {
    row.classList.remove("flash");
    void row.offsetWidth;
    row.classList.add("flash");
  }

  function parseRow(html) {
    const template = document.createElement("template");
    template.innerHTML = `<table><tbody>${html.trim()}</tbody></table>`;
    return template.content.querySelector("tr");
  }

  // One fetch per row at a time; a change arriving meanwhile fetches again afterwards.
  const inFlight = new Set();
  const again = new Set();
  async function refreshRow(id) {
    if (inFlight.has(id)) {
      again.add(id);
      return;
    }
    inFlight.add(id);
    try {
      const html = await fetchFragment(`/${slug}/${id}/row`);
      const old = document.getElementById(rowId(id));
      if (html === null) {
        old?.remove();
      } else {
        const row = parseRow(html);
        if (old) old.replaceWith(row);
        place(row);
        flash(row);
      }
      refreshView();
    } finally {
      inFlight.delete(id);
      if (again.delete(id)) refreshRow(id);
    }
  }

  function removeRow(id) {
    document.getElementById(rowId(id))?.remove();
    refreshView();
  }

  async function reloadAll() {
    const html = await fetchFragment(`/${slug}/rows`);
    if (html === null) return;
    tbody.innerHTML = html;
    sortRows();
  }

  function sortRows() {
    for (const row of [...tbody.rows].sort(compare)) tbody.append(row);
    for (const header of headers) {
      if (header.dataset.sortKey === sort.key) header.setAttribute("aria-sort", sort.dir > 0 ? "ascending" : "descending");
      else header.removeAttribute("aria-sort");
    }
    refreshView();
  }

  live.on(`${topic}.created`, (frame) => refreshRow(frame.payload.id));
  live.on(`${topic}.updated`, (frame) => refreshRow(frame.payload.id));
  live.on(`${topic}.deleted`, (frame) => removeRow(frame.payload.id));
  live.onResync(reloadAll);

  search.addEventListener("input", refreshView);
  statusFilter.addEventListener("change", refreshView);
  for (const header of headers) {
    header.addEventListener("click", () => {
      sort = { key: header.dataset.sortKey, dir: sort.key === header.dataset.sortKey ? -sort.dir : 1 };
      sortRows();
    });
  }
  sortRows();

  if (document.getElementById("edit-dialog")) {
    initEditor({ live, slug, topic, tbody, refreshRow });
  }
}

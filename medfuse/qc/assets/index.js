/* medfuse batch index: sort the case table by any column and filter it, all in the page. */
(function () {
  "use strict";
  const table = document.getElementById("cases");
  if (!table) {
    return;
  }
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  rows.forEach((row, position) => {
    row.dataset.position = String(position);
  });
  const search = document.getElementById("filter-text");
  const status = document.getElementById("filter-status");
  const attention = document.getElementById("filter-attention");
  const count = document.getElementById("shown-count");

  function applyFilter() {
    const text = search.value.trim().toLowerCase();
    let shown = 0;
    rows.forEach((row) => {
      const visible =
        (!text || row.dataset.search.includes(text)) &&
        (status.value === "all" || row.dataset.status === status.value) &&
        (!attention.checked || row.dataset.attention === "1");
      row.hidden = !visible;
      shown += visible ? 1 : 0;
    });
    count.textContent = "Showing " + shown + " of " + rows.length + " cases";
  }

  function key(row, column, numeric) {
    const text = row.cells[column].dataset.value;
    if (!numeric) {
      return text;
    }
    return text === "" ? null : Number(text);
  }

  function sortBy(header) {
    const column = header.cellIndex;
    const numeric = header.dataset.type === "number";
    const ascending = header.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("thead th[data-type]").forEach((other) => {
      other.setAttribute("aria-sort", "none");
    });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    const sign = ascending ? 1 : -1;
    const sorted = rows.slice().sort((a, b) => {
      const x = key(a, column, numeric);
      const y = key(b, column, numeric);
      if (x === null || y === null || x === "" || y === "") {
        // missing values last in either direction
        const missing = (x === null || x === "") - (y === null || y === "");
        if (missing !== 0) {
          return missing;
        }
      } else {
        const order = numeric ? x - y : x.localeCompare(y, undefined, { numeric: true, sensitivity: "base" });
        if (order !== 0) {
          return sign * order;
        }
      }
      return Number(a.dataset.position) - Number(b.dataset.position);
    });
    sorted.forEach((row) => body.appendChild(row));
  }

  table.querySelectorAll("thead th[data-type]").forEach((header) => {
    header.setAttribute("aria-sort", "none");
    header.querySelector("button").addEventListener("click", () => sortBy(header));
  });
  search.addEventListener("input", applyFilter);
  status.addEventListener("change", applyFilter);
  attention.addEventListener("change", applyFilter);
  applyFilter();
})();

(function () {
  "use strict";
  // Open the case a link points to (heat table, regressions), then bring it into view.
  function openTarget(scroll) {
    var id = decodeURIComponent(window.location.hash.slice(1));
    if (!id) { return; }
    var el = document.getElementById(id);
    if (!el) { return; }
    if (el.tagName === "DETAILS") { el.open = true; }
    if (scroll) { el.scrollIntoView({block: "start"}); }
  }
  window.addEventListener("hashchange", function () { openTarget(true); });
  openTarget(true);

  // Heat table: a click anywhere in a row's cell opens that case.
  document.querySelectorAll("[data-target]").forEach(function (cell) {
    cell.addEventListener("click", function (event) {
      if (event.target.closest("a")) { return; }
      window.location.hash = cell.getAttribute("data-target");
    });
  });

  // Expand or collapse every case.
  function setAll(open) {
    document.querySelectorAll("details.case").forEach(function (d) { d.open = open; });
  }
  document.querySelectorAll("[data-action]").forEach(function (button) {
    button.addEventListener("click", function () {
      setAll(button.getAttribute("data-action") === "expand");
    });
  });

  // Sortable tables: click a header; numbers sort numerically, blanks last.
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var heads = table.querySelectorAll("thead th");
    heads.forEach(function (th, index) {
      th.addEventListener("click", function () {
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        var asc = th.getAttribute("aria-sort") !== "ascending";
        heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        function key(row) {
          var cell = row.cells[index];
          var raw = cell ? (cell.getAttribute("data-sort") || cell.textContent.trim()) : "";
          var num = parseFloat(raw);
          return isNaN(num) || raw === "" ? raw.toLowerCase() : num;
        }
        rows.sort(function (a, b) {
          var x = key(a), y = key(b);
          if (x === y) { return 0; }
          if (x === "") { return 1; }
          if (y === "") { return -1; }
          if (typeof x !== typeof y) { return typeof x === "number" ? -1 : 1; }
          return (x < y ? -1 : 1) * (asc ? 1 : -1);
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });

  // Printing shows every case; the previous state comes back afterwards.
  var before = [];
  window.addEventListener("beforeprint", function () {
    before = [];
    document.querySelectorAll("details").forEach(function (d) { before.push([d, d.open]); d.open = true; });
  });
  window.addEventListener("afterprint", function () {
    before.forEach(function (pair) { pair[0].open = pair[1]; });
  });
})();

// grdkit evaluation report: the pairs table (sort, filter, paginate). Hand-written, no library,
// no network: the rows come from pairs.js (window.GRDKIT_PAIRS), loaded by a <script> tag so the
// page works from file://. Only the current page's rows are in the DOM.
(function () {
  "use strict";
  var D = window.GRDKIT_PAIRS;
  var table = document.getElementById("pairs");
  if (!D || !table) { return; }
  var C = {};
  D.columns.forEach(function (c, i) { C[c] = i; });
  var PAGE = 100, page = 0, sortCol = null, sortDir = 1, view = [];
  var el = function (id) { return document.getElementById(id); };

  function matches(r, f) {
    if (f.split && r[C.split] !== f.split) { return false; }
    if (f.outcome && r[C.outcome] !== f.outcome) { return false; }
    if (f.lo !== null && !(r[C.iou] >= f.lo)) { return false; }
    if (f.hi !== null && !(r[C.iou] <= f.hi)) { return false; }
    if (f.text && r[C.expression].toLowerCase().indexOf(f.text) < 0) { return false; }
    return true;
  }
  function num(v) { var x = parseFloat(v); return isNaN(x) ? null : x; }
  function refresh() {
    var f = { split: el("filter-split").value, outcome: el("filter-outcome").value,
              lo: num(el("filter-iou-min").value), hi: num(el("filter-iou-max").value),
              text: el("filter-text").value.trim().toLowerCase() };
    view = [];
    for (var i = 0; i < D.rows.length; i++) { if (matches(D.rows[i], f)) { view.push(i); } }
    if (sortCol !== null) {
      var k = C[sortCol];
      view.sort(function (a, b) {
        var x = D.rows[a][k], y = D.rows[b][k];
        if (x < y) { return -sortDir; } if (x > y) { return sortDir; }
        return a - b;  // ties keep the file's order
      });
    }
    page = 0;
    draw();
  }
  function cell(tr, text, cls) {
    var td = document.createElement("td");
    td.textContent = text;
    if (cls) { td.className = cls; }
    tr.appendChild(td);
    return td;
  }
  function link(td, href, text) {
    td.textContent = "";
    var a = document.createElement("a");
    a.href = href; a.textContent = text; td.appendChild(a);
  }
  function draw() {
    var body = table.tBodies[0];
    while (body.firstChild) { body.removeChild(body.firstChild); }
    var pages = Math.max(1, Math.ceil(view.length / PAGE));
    page = Math.min(Math.max(page, 0), pages - 1);
    var rows = view.slice(page * PAGE, (page + 1) * PAGE);
    rows.forEach(function (i) {
      var r = D.rows[i], tr = document.createElement("tr");
      tr.setAttribute("data-outcome", r[C.outcome]);
      tr.setAttribute("data-iou", r[C.iou]);
      cell(tr, r[C.split]);
      link(cell(tr, ""), "groups/" + r[C.group_page] + ".html", String(r[C.group_id]));
      cell(tr, r[C.expression_id], "num");
      cell(tr, r[C.expression]);
      cell(tr, r[C.image_id], "num");
      cell(tr, r[C.positive] ? "positive" : "negative");
      cell(tr, r[C.outcome], "o-" + r[C.outcome]);
      cell(tr, r[C.iou].toFixed(4), "num");
      cell(tr, r[C.pred_area], "num");
      cell(tr, r[C.inter], "num");
      cell(tr, r[C.union], "num");
      cell(tr, r[C.no_target] ? "yes" : "no");
      var t = cell(tr, "-");
      if (r[C.thumb]) { link(t, "thumbs/" + r[C.thumb], "picture"); }
      body.appendChild(tr);
    });
    el("page-info").textContent = "page " + (page + 1) + " of " + pages + " (" + view.length +
      " of " + D.rows.length + " pairs)";
    el("prev").disabled = page === 0;
    el("next").disabled = page >= pages - 1;
  }
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
    var col = th.getAttribute("data-col");
    if (!col) { return; }
    th.addEventListener("click", function () {
      sortDir = sortCol === col ? -sortDir : 1;
      sortCol = col;
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) {
        h.classList.remove("asc", "desc");
      });
      th.classList.add(sortDir > 0 ? "asc" : "desc");
      refresh();
    });
  });
  ["filter-split", "filter-outcome", "filter-iou-min", "filter-iou-max", "filter-text"]
    .forEach(function (id) { el(id).addEventListener("input", refresh); });
  el("prev").addEventListener("click", function () { page -= 1; draw(); });
  el("next").addEventListener("click", function () { page += 1; draw(); });
  var q = (window.location.hash || "").replace("#", "");
  if (q.indexOf("outcome=") === 0) { el("filter-outcome").value = q.slice(8); }
  refresh();
}());

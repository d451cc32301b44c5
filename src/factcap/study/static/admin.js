// factcap study: the admin page (progress per rater). Strings go in with textContent only.
(function () {
  "use strict";
  var key = new URLSearchParams(location.search).get("key");
  var $ = function (id) { return document.getElementById(id); };

  function cell(row, text, cls) {
    var td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = text === null || text === undefined ? "" : String(text);
    row.appendChild(td);
    return td;
  }

  function render(data) {
    var body = $("raters").tBodies[0];
    body.textContent = "";
    data.raters.forEach(function (r) {
      var tr = document.createElement("tr");
      tr.dataset.token = r.token;
      if (r.total > 0 && r.done >= r.total) tr.className = "complete";
      cell(tr, r.label);
      var a = document.createElement("a");
      a.href = "/r/" + encodeURIComponent(r.token);
      a.textContent = location.origin + "/r/" + r.token;
      cell(tr, "").appendChild(a);
      cell(tr, r.external_id);
      cell(tr, r.done + " / " + r.total, "num done");
      cell(tr, r.gold_done, "num");
      cell(tr, r.gold_failed, "num");
      cell(tr, r.excluded ? "excluded: " + r.excluded : "");
      if (r.excluded) tr.className = "excluded";
      body.appendChild(tr);
    });
    $("overall").textContent = data.done + " / " + data.total + " answered, " +
      data.raters.length + " raters";
    document.body.dataset.ready = "1";
  }

  function refresh() {
    var headers = key ? { "Authorization": "Bearer " + key } : {};
    fetch("/api/admin/progress", { headers: headers, cache: "no-store" }).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) throw new Error(body.detail || r.statusText);
        $("problem").hidden = true;
        render(body);
      });
    }).catch(function (err) {
      $("problem").textContent = "Could not load the progress: " + err.message;
      $("problem").hidden = false;
    });
  }

  $("refresh").addEventListener("click", refresh);
  setInterval(refresh, 15000);
  refresh();
})();

// factcap study: the rater page. Every caption is inserted with textContent, never as HTML.
(function () {
  "use strict";
  var token = location.pathname.split("/")[2] || "";
  var api = "/api/r/" + token;
  var $ = function (id) { return document.getElementById(id); };
  var buttons = Array.prototype.slice.call(document.querySelectorAll(".choices button"));
  var KEYS = { "1": "left", "2": "right", "3": "same" };
  var current = null;   // the assignment on screen
  var busy = true;      // a vote or a load is in flight: no second vote
  var shownAt = 0;

  function setBusy(on) {
    busy = on;
    buttons.forEach(function (b) { b.disabled = on; });
    document.body.dataset.busy = on ? "1" : "0";
  }
  function problem(text) {
    $("problem").textContent = text || "";
    $("problem").hidden = !text;
  }
  function progress(done, total) {
    $("progress").textContent = done + " / " + total;
    $("progress-bar").max = Math.max(total, 1);
    $("progress-bar").value = done;
  }
  function detail(response) {
    return response.json().then(function (body) {
      return (body && body.detail) || response.statusText;
    }, function () { return response.statusText; });
  }

  function ready() {
    shownAt = performance.now();
    setBusy(false);
    document.body.dataset.assignment = String(current.id);
  }

  function show(data) {
    $("loading").hidden = true;
    progress(data.done, data.total);
    current = data.assignment;
    if (!current) {
      $("task").hidden = true;
      $("done").hidden = false;
      $("done-count").textContent = "You answered " + data.done + " of " + data.total + ".";
      if (data.completion_code) {
        $("completion-code").textContent = data.completion_code;
        $("code-line").hidden = false;
      }
      document.body.dataset.state = "done";
      return;
    }
    $("question").textContent = data.question || "";
    $("caption-left").textContent = current.left;
    $("caption-right").textContent = current.right;
    $("task").hidden = false;
    document.body.dataset.state = "task";
    var img = $("image");
    img.onload = ready;
    img.onerror = function () {
      problem("The image could not be loaded; answer from the captions only if you must.");
      ready();
    };
    img.src = current.image_url;
  }

  function load() {
    setBusy(true);
    fetch(api + "/next", { cache: "no-store" }).then(function (r) {
      if (!r.ok) return detail(r).then(function (d) { throw new Error(d); });
      return r.json();
    }).then(show, function (err) {
      problem("Could not load the next item (" + err.message + "). Reload the page to try again.");
    });
  }

  function vote(choice) {
    if (busy || !current) return;
    setBusy(true);
    problem("");
    var body = {
      assignment_id: current.id,
      choice: choice,
      elapsed_ms: Math.min(86400000, Math.max(0, Math.round(performance.now() - shownAt)))
    };
    fetch(api + "/vote", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body)
    }).then(function (r) {
      if (r.ok || r.status === 409) return load();  // 409: already answered (another tab)
      return detail(r).then(function (d) {
        problem("Your answer was not saved: " + d);
        setBusy(false);
      });
    }, function () {
      problem("The server could not be reached: your answer was not saved. Try again.");
      setBusy(false);
    });
  }

  buttons.forEach(function (b) {
    b.addEventListener("click", function () { vote(b.dataset.choice); });
  });
  document.addEventListener("keydown", function (e) {
    if (e.repeat || e.ctrlKey || e.metaKey || e.altKey || !KEYS[e.key]) return;
    e.preventDefault();
    vote(KEYS[e.key]);
  });
  load();
})();

// factcap report: renders the JSON embedded in #factcap-data. Every string from the data is
// inserted with textContent or setAttribute, never parsed as HTML.
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("factcap-data").textContent);
  var SVGNS = "http://www.w3.org/2000/svg";
  var cards = [];

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function svg(tag, attrs) {
    var e = document.createElementNS(SVGNS, tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, String(attrs[k])); });
    return e;
  }
  function fmt(v) {
    return typeof v === "number" && isFinite(v) ? (Math.abs(v) >= 100 ? v.toFixed(1) : v.toFixed(3)) : "n/a";
  }
  function metricValue(item, source, metric) {
    var s = item.scores && item.scores[source];
    var v = s && s.metrics ? s.metrics[metric] : null;
    return typeof v === "number" && isFinite(v) ? v : null;
  }

  function figure(item) {
    var fig = el("div", "figure");
    if (!item.thumb) {
      fig.className = "no-image";
      fig.textContent = "image not shown: " + (item.thumb_problem || "no image");
      return fig;
    }
    var img = el("img", "thumb");
    img.alt = item.source;
    img.src = item.thumb;
    fig.appendChild(img);
    if (item.box_space) {
      var w = item.box_space[0], h = item.box_space[1];
      var layer = svg("svg", { "class": "boxes", viewBox: "0 0 " + w + " " + h, preserveAspectRatio: "none" });
      item.claims.forEach(function (claim, j) {
        if (!claim.boxes.length) return;
        var g = svg("g", { "class": "off verdict-" + claim.verdict, "data-claim": j });
        claim.boxes.forEach(function (b) {
          var r = svg("rect", {
            x: b.box[0], y: b.box[1], width: Math.max(0, b.box[2] - b.box[0]),
            height: Math.max(0, b.box[3] - b.box[1]),
            "vector-effect": "non-scaling-stroke"
          });
          var t = svg("title");
          t.textContent = claim.subject + " " + fmt(b.score);
          r.appendChild(t);
          g.appendChild(r);
        });
        layer.appendChild(g);
      });
      fig.appendChild(layer);
    }
    if (item.regions.length) fig.appendChild(regionLayer(item, fig));
    return fig;
  }

  // The regions of --regions: a box with its label each, placed in fractions of the image; the
  // region's caption appears in the figure's tip while the pointer (or the focus) is on it.
  function regionLayer(item, fig) {
    var layer = el("div", "region-layer");
    var tip = el("div", "region-tip");
    tip.hidden = true;
    item.regions.forEach(function (r) {
      var box = el("div", "region-box");
      box.dataset.region = r.id;
      box.tabIndex = 0;
      box.setAttribute("aria-label", r.label + ": " + r.caption);
      box.style.left = 100 * r.box[0] + "%";
      box.style.top = 100 * r.box[1] + "%";
      box.style.width = 100 * (r.box[2] - r.box[0]) + "%";
      box.style.height = 100 * (r.box[3] - r.box[1]) + "%";
      box.appendChild(el("span", "region-label", r.label));
      var show = function () {
        tip.replaceChildren(el("b", null, r.label), document.createTextNode(" " + (r.caption || "(no caption)")));
        tip.dataset.region = r.id;
        tip.hidden = false;
      };
      var hide = function () { if (tip.dataset.region === r.id) tip.hidden = true; };
      box.addEventListener("mouseenter", show);
      box.addEventListener("focus", show);
      box.addEventListener("mouseleave", hide);
      box.addEventListener("blur", hide);
      layer.appendChild(box);
    });
    fig.appendChild(tip);
    return layer;
  }

  function regionList(item, fig) {
    var ul = el("ul", "region-list");
    item.regions.forEach(function (r) {
      var li = el("li", "region-item");
      li.dataset.region = r.id;
      li.appendChild(el("span", "region-name", r.label + (r.score === null ? "" : " " + fmt(r.score))));
      li.appendChild(el("span", "region-caption", r.caption));
      var mark = function (on) {
        fig.querySelectorAll(".region-box").forEach(function (b) {
          if (b.dataset.region === r.id) b.classList.toggle("active", on);
        });
      };
      li.addEventListener("mouseenter", function () { mark(true); });
      li.addEventListener("mouseleave", function () { mark(false); });
      ul.appendChild(li);
    });
    return ul;
  }

  function section(title, body) {
    var s = el("section", title.toLowerCase());
    s.appendChild(el("h3", null, title));
    s.appendChild(body);
    return s;
  }

  function claimsList(item, fig) {
    var ul = el("ul", "claim-list");
    item.claims.forEach(function (claim, j) {
      var li = el("li", "claim verdict-" + claim.verdict);
      li.dataset.verdict = claim.verdict;
      var label = el("label");
      if (claim.boxes.length && item.box_space && item.thumb) {
        var box = el("input", "box-toggle");
        box.type = "checkbox";
        box.dataset.claim = String(j);
        box.title = "show the detector boxes of this claim";
        box.addEventListener("change", function () {
          var g = fig.querySelector('g[data-claim="' + j + '"]');
          if (g) g.classList.toggle("off", !box.checked);
        });
        label.appendChild(box);
      }
      label.appendChild(el("span", "claim-text", claim.text));
      label.appendChild(el("span", "kind", claim.kind));
      label.appendChild(el("span", "verdict", claim.verdict));
      label.appendChild(el("span", "score", fmt(claim.score)));
      if (claim.boxes.length) label.appendChild(el("span", "kind", claim.boxes.length + " box(es)"));
      li.appendChild(label);
      if (claim.detail.length) li.appendChild(el("span", "detail", claim.detail.join("; ")));
      ul.appendChild(li);
    });
    return ul;
  }

  function scoresTable(item) {
    var sources = DATA.score_sources.filter(function (s) { return item.scores[s]; });
    var table = el("table", "scores");
    var head = el("tr");
    head.appendChild(el("th", null, "metric"));
    sources.forEach(function (s) { head.appendChild(el("th", null, s)); });
    table.appendChild(head);
    DATA.metrics.forEach(function (m) {
      var tr = el("tr");
      tr.dataset.metric = m;
      tr.appendChild(el("th", null, m));
      sources.forEach(function (s) {
        var td = el("td", null, fmt(metricValue(item, s, m)));
        var why = item.scores[s].failures && item.scores[s].failures[m];
        if (why) td.title = String(why);
        tr.appendChild(td);
      });
      table.appendChild(tr);
    });
    return table;
  }

  function card(item, index) {
    var c = el("article", "card" + (item.status === "error" ? " error" : ""));
    c.dataset.index = String(index);
    c.dataset.id = item.id;
    c.dataset.status = item.status;
    c.dataset.refuted = String(item.n_refuted);
    var fig = figure(item);
    c.appendChild(fig);
    var h = el("h2", "source", item.source || item.id);
    h.title = "id " + item.id;
    c.appendChild(h);
    if (item.error) {
      var e = el("div", "error-box");
      e.appendChild(el("span", "error-type", item.error.type));
      e.appendChild(el("span", "error-message", item.error.message));
      c.appendChild(e);
    }
    if (item.captions.length) {
      var dl = el("dl");
      item.captions.forEach(function (pair) {
        dl.appendChild(el("dt", null, pair[0]));
        var dd = el("dd", "caption", pair[1]);
        dd.dataset.style = pair[0];
        dl.appendChild(dd);
      });
      c.appendChild(section("Captions", dl));
    }
    if (item.proposals.length) {
      var ul = el("ul");
      item.proposals.forEach(function (p) {
        var li = el("li", "proposal");
        li.appendChild(el("span", "model", p.model));
        var text = el("span", "proposal-text");
        p.segments.forEach(function (seg) {
          if (seg.refuted.length) {
            var d = el("del", "refuted-text", seg.text);
            d.title = "refuted: " + seg.refuted.map(function (j) { return item.claims[j].text; }).join(" | ");
            text.appendChild(d);
          } else {
            text.appendChild(document.createTextNode(seg.text));
          }
        });
        li.appendChild(text);
        ul.appendChild(li);
      });
      c.appendChild(section("Proposals", ul));
    }
    if (item.claims.length) c.appendChild(section("Claims", claimsList(item, fig)));
    if (item.regions.length) c.appendChild(section("Regions", regionList(item, fig)));
    if (DATA.metrics.length && Object.keys(item.scores).length) c.appendChild(section("Scores", scoresTable(item)));
    if (item.notes.length) {
      var notes = el("ul");
      item.notes.forEach(function (n) { notes.appendChild(el("li", null, n)); });
      c.appendChild(section("Notes", notes));
    }
    return c;
  }

  function histogram(metric, source) {
    var box = el("div", "histogram");
    box.dataset.metric = metric;
    box.appendChild(el("h3", null, metric));
    var values = DATA.items.map(function (it) { return metricValue(it, source, metric); })
      .filter(function (v) { return v !== null; });
    var missing = DATA.items.filter(function (it) { return it.scores[source]; }).length - values.length;
    var W = 220, H = 90, B = 10;
    var s = svg("svg", { width: W, height: H + 14, viewBox: "0 0 " + W + " " + (H + 14), role: "img" });
    if (values.length) {
      var lo = Math.min.apply(null, values), hi = Math.max.apply(null, values);
      var bins = hi > lo ? B : 1, counts = [];
      for (var i = 0; i < bins; i++) counts.push(0);
      values.forEach(function (v) {
        counts[Math.min(bins - 1, bins === 1 ? 0 : Math.floor(((v - lo) / (hi - lo)) * bins))] += 1;
      });
      var top = Math.max.apply(null, counts), bw = W / bins;
      counts.forEach(function (n, k) {
        var bh = top ? (n / top) * (H - 12) : 0;
        var r = svg("rect", { "class": "bar", x: k * bw + 1, y: H - bh, width: bw - 2, height: bh, "data-count": n });
        var t = svg("title");
        var a = lo + ((hi - lo) * k) / bins, b = lo + ((hi - lo) * (k + 1)) / bins;
        t.textContent = "[" + fmt(a) + ", " + fmt(b) + "]: " + n;
        r.appendChild(t);
        s.appendChild(r);
      });
      var l = svg("text", { x: 0, y: H + 12 });
      l.textContent = fmt(lo);
      var rt = svg("text", { x: W, y: H + 12, "text-anchor": "end" });
      rt.textContent = fmt(hi);
      s.appendChild(l);
      s.appendChild(rt);
    }
    box.appendChild(s);
    box.appendChild(el("div", "hist-caption", values.length + " values" + (missing ? ", " + missing + " n/a" : "")));
    return box;
  }

  function renderHistograms() {
    var host = document.getElementById("histograms");
    host.replaceChildren();
    var source = document.getElementById("score-source").value;
    DATA.metrics.forEach(function (m) { host.appendChild(histogram(m, source)); });
  }

  function apply() {
    var errorsOnly = document.getElementById("f-errors").checked;
    var refutedOnly = document.getElementById("f-refuted").checked;
    var metric = document.getElementById("sort-metric").value;
    var source = document.getElementById("score-source").value;
    var desc = document.getElementById("sort-dir").value === "desc";
    var order = DATA.items.map(function (_, i) { return i; });
    if (metric) {
      order.sort(function (a, b) {
        var va = metricValue(DATA.items[a], source, metric), vb = metricValue(DATA.items[b], source, metric);
        if (va === null || vb === null) return va === null ? (vb === null ? a - b : 1) : -1;
        return va === vb ? a - b : desc ? vb - va : va - vb;
      });
    }
    var grid = document.getElementById("grid"), shown = 0;
    order.forEach(function (i) {
      var item = DATA.items[i], c = cards[i];
      var visible = (!errorsOnly || item.status === "error") && (!refutedOnly || item.n_refuted > 0);
      c.hidden = !visible;
      if (visible) shown += 1;
      grid.appendChild(c);
    });
    document.getElementById("shown").textContent = "showing " + shown + " of " + DATA.items.length;
  }

  function option(select, value, label) {
    var o = el("option", null, label);
    o.value = value;
    select.appendChild(o);
  }

  document.getElementById("title").textContent = DATA.title;
  document.getElementById("summary").textContent = DATA.summary;
  var sourceSelect = document.getElementById("score-source");
  var sortSelect = document.getElementById("sort-metric");
  DATA.score_sources.forEach(function (s) { option(sourceSelect, s, s); });
  DATA.metrics.forEach(function (m) { option(sortSelect, m, m); });
  if (!DATA.metrics.length) document.getElementById("score-controls").hidden = true;
  var grid = document.getElementById("grid");
  DATA.items.forEach(function (item, i) {
    var c = card(item, i);
    cards.push(c);
    grid.appendChild(c);
  });
  ["f-errors", "f-refuted", "sort-metric", "sort-dir"].forEach(function (id) {
    document.getElementById(id).addEventListener("change", apply);
  });
  sourceSelect.addEventListener("change", function () { renderHistograms(); apply(); });
  renderHistograms();
  apply();
  document.body.dataset.ready = "1";
})();

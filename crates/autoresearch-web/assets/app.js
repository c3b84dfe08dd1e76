// autoresearch dashboard: live updates, the tick slider, the actions, the
// chart's zoom and the attempts table's column chooser.
// Plain JavaScript, no library, shipped in the binary.
(function () {
  "use strict";
  var KEY = "autoresearch-token";

  // The token comes in the URL's fragment (#token=...), which browsers never
  // send to the server; it is kept for this origin and the fragment removed.
  var m = location.hash.match(/token=([^&]+)/);
  if (m) {
    try { localStorage.setItem(KEY, decodeURIComponent(m[1])); } catch (e) {}
    history.replaceState(null, "", location.pathname + location.search);
  }
  function token() {
    try { return localStorage.getItem(KEY) || ""; } catch (e) { return ""; }
  }

  // Live updates: the server sends a `tick` event when the world's head
  // moves; the changing part of the page is fetched and swapped in.
  var live = document.getElementById("live");
  var refreshing = false, again = false;
  function refresh() {
    if (refreshing) { again = true; return; }
    refreshing = true;
    fetch(live.dataset.live, { headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        live.innerHTML = html;
        var s = document.getElementById("summary");
        if (s) { live.dataset.tick = s.dataset.tick; syncSlider(s.dataset.tick); }
      })
      .catch(function () {})
      .then(function () { refreshing = false; if (again) { again = false; refresh(); } });
  }
  if (live && live.dataset.events && window.EventSource) {
    var es = new EventSource(live.dataset.events);
    es.addEventListener("tick", function (e) {
      if (e.data !== live.dataset.tick) refresh();
    });
  }

  // The tick slider: moving it shows the value; letting go travels there.
  var slider = document.getElementById("tick-slider");
  var label = document.getElementById("tick-label");
  function syncSlider(tick) {
    if (!slider || !live || !live.dataset.events) return;
    slider.max = tick; slider.dataset.head = tick; slider.value = tick;
    if (label) label.textContent = tick;
    var h = document.getElementById("head-tick");
    if (h) h.textContent = tick;
  }
  if (slider) {
    slider.addEventListener("input", function () { if (label) label.textContent = slider.value; });
    slider.addEventListener("change", function () {
      var url = new URL(location.href);
      if (slider.value === slider.dataset.head) url.searchParams.delete("tick");
      else url.searchParams.set("tick", slider.value);
      url.searchParams.delete("page");
      location.href = url.toString();
    });
  }

  // Actions: POST with the token; the answer is shown below the page.
  function show(text, ok) {
    var out = document.getElementById("action-result");
    if (!out) return;
    out.textContent = text;
    out.className = "action-result " + (ok ? "ok" : "failed");
  }
  document.addEventListener("click", function (e) {
    var b = e.target.closest && e.target.closest("button.act");
    if (!b) return;
    e.preventDefault();
    var t = token();
    if (!t) {
      t = window.prompt("The dashboard's token (printed by `autoresearch serve`):") || "";
      if (!t) return;
      try { localStorage.setItem(KEY, t); } catch (err) {}
    }
    var body = b.dataset.action === "vote"
      ? { verdict: b.dataset.verdict }
      : { at: Number(b.dataset.at) };
    b.disabled = true;
    fetch(b.dataset.url, {
      method: "POST",
      headers: { "Content-Type": "application/json", "Authorization": "Bearer " + t },
      body: JSON.stringify(body)
    })
      .then(function (r) { return r.json().then(function (j) { return { ok: r.ok, j: j }; }); })
      .then(function (res) {
        if (res.ok) {
          show(res.j.message, true);
          if (live && live.dataset.live) refresh();
        } else {
          show(res.j.error || "refused", false);
          b.disabled = false;
        }
      })
      .catch(function (err) { show(String(err), false); b.disabled = false; });
  });

  // Chart zoom: drag across the chart to show that window of attempts,
  // drawn again by the server (/worlds/W/chart?from=&to=); "reset zoom"
  // shows them all. The window is kept in the address and in live updates.
  function zoomTo(from, to) {
    var box = document.getElementById("chart");
    if (!box) return;
    var url = new URL(location.href);
    if (from) { url.searchParams.set("from", from); url.searchParams.set("to", to); }
    else { url.searchParams.delete("from"); url.searchParams.delete("to"); }
    url.searchParams.delete("page");
    var q = from ? "from=" + from + "&to=" + to : "";
    fetch(box.dataset.chart + q, { headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (svg) {
        box.innerHTML = svg;
        history.replaceState(null, "", url.pathname + url.search);
        if (live && live.dataset.live) {
          var l = new URL(live.dataset.live, location.origin);
          if (from) { l.searchParams.set("from", from); l.searchParams.set("to", to); }
          else { l.searchParams.delete("from"); l.searchParams.delete("to"); }
          live.dataset.live = l.pathname + l.search;
        }
        var z = document.getElementById("zoom");
        if (z) {
          var s = box.querySelector("svg");
          var reset = document.getElementById("zoom-reset");
          if (reset) reset.hidden = !from;
          z.firstChild.textContent = from && s
            ? "attempts " + s.dataset.from + "–" + s.dataset.to + " of " + s.dataset.total + " · drag across the chart to zoom "
            : "drag across the chart to zoom ";
        }
      })
      .catch(function () {});
  }
  // The attempt number under a client x coordinate of the chart's SVG.
  function attemptAt(svg, clientX) {
    var r = svg.getBoundingClientRect();
    var d = svg.dataset, w = Number(d.w);
    var x = (clientX - r.left) / r.width * w;
    var f = (x - Number(d.x0)) / (Number(d.x1) - Number(d.x0));
    f = Math.max(0, Math.min(1, f));
    return Math.round(Number(d.from) + f * (Number(d.to) - Number(d.from)));
  }
  var drag = null;
  document.addEventListener("mousedown", function (e) {
    var svg = e.target.closest && e.target.closest("#chart svg.chart");
    if (!svg || !svg.dataset.from || e.button !== 0) return;
    e.preventDefault();
    var band = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    band.setAttribute("class", "zoom-band");
    band.setAttribute("y", "0"); band.setAttribute("height", "300");
    svg.appendChild(band);
    drag = { svg: svg, x0: e.clientX, band: band };
  });
  document.addEventListener("mousemove", function (e) {
    if (!drag) return;
    var r = drag.svg.getBoundingClientRect(), k = Number(drag.svg.dataset.w) / r.width;
    var a = (Math.min(drag.x0, e.clientX) - r.left) * k, b = (Math.max(drag.x0, e.clientX) - r.left) * k;
    drag.band.setAttribute("x", a); drag.band.setAttribute("width", Math.max(0, b - a));
  });
  document.addEventListener("mouseup", function (e) {
    if (!drag) return;
    var d = drag; drag = null;
    var a = attemptAt(d.svg, d.x0), b = attemptAt(d.svg, e.clientX);
    if (d.band.parentNode) d.band.parentNode.removeChild(d.band);
    if (Math.abs(e.clientX - d.x0) < 4 || a === b) return;
    zoomTo(Math.min(a, b), Math.max(a, b));
  });
  document.addEventListener("click", function (e) {
    if (e.target && e.target.id === "zoom-reset") zoomTo(null, null);
  });

  // The column chooser: the ticked metrics go into the form's `cols`.
  document.addEventListener("submit", function (e) {
    var f = e.target;
    if (f.id === "filters") {
      var cols = f.querySelector("#cols");
      var picked = Array.prototype.map.call(f.querySelectorAll("input.col-choice:checked"),
        function (c) { return c.value; });
      if (cols) { cols.value = picked.join(","); if (!cols.value) cols.disabled = true; }
      return;
    }
    // Start a replay: POST with the token, then open the replay view.
    if (f.id === "start-replay") {
      e.preventDefault();
      var t = token();
      if (!t) {
        t = window.prompt("The dashboard's token (printed by `autoresearch serve`):") || "";
        if (!t) return;
        try { localStorage.setItem(KEY, t); } catch (err) {}
      }
      var body = { comparator: f.elements.comparator.value };
      if (f.elements.from.value) body.from = Number(f.elements.from.value);
      if (f.elements.name.value) body.name = f.elements.name.value;
      show("replaying…", true);
      fetch(f.dataset.url, {
        method: "POST",
        headers: { "Content-Type": "application/json", "Authorization": "Bearer " + t },
        body: JSON.stringify(body)
      })
        .then(function (r) { return r.json().then(function (j) { return { ok: r.ok, j: j }; }); })
        .then(function (res) {
          if (res.ok) { show(res.j.message, true); location.href = res.j.url; }
          else show(res.j.error || "refused", false);
        })
        .catch(function (err) { show(String(err), false); });
    }
  });
})();

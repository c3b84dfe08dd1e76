// autoresearch dashboard: live updates, the tick slider and the actions.
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
})();

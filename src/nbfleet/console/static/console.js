/* nbfleet console: progressive enhancement of server-rendered pages. No dependencies, no build step.
 *
 * - list page: filters apply as you type (debounced) and sort/paging links load without a reload;
 *   the new rows come from the server-rendered page itself (#results is swapped in), so the page
 *   has one renderer; statuses, buttons and leases of the shown rows are polled from
 *   /console/api/status.
 * - detail page: the live section (status, actions, progress, lease, events) is re-fetched and
 *   swapped in when it changed.
 * - everywhere: local times, lease countdowns, confirmation of destructive forms.
 */
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  var POLL_BUSY_MS = 1000;   // while something shown is starting, stopping, ... (data-busy)
  var POLL_IDLE_MS = 3000;   // otherwise: only the culler or another tab changes things
  var DEBOUNCE_MS = 250;
  var clockOffset = 0;  // server clock minus browser clock, so countdowns follow the server

  function setServerNow(ms) {
    if (ms) clockOffset = Number(ms) - Date.now();
  }
  setServerNow(document.body.dataset.now);

  function fmtTime(ms) {
    return new Date(Number(ms)).toLocaleString(undefined, {
      year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit"
    });
  }

  function localize(root) {
    root.querySelectorAll("time[data-ms]").forEach(function (t) {
      t.title = t.textContent;
      t.textContent = fmtTime(t.dataset.ms);
    });
  }

  function countdownText(left) {
    if (left <= 0) return "any moment now";
    var s = Math.floor(left / 1000), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    if (h > 0) return "in " + h + " h " + m + " min";
    if (m > 0) return "in " + m + " min " + (s % 60) + " s";
    return "in " + s + " s";
  }

  function tick() {
    var now = Date.now() + clockOffset;
    document.querySelectorAll("[data-expires]").forEach(function (el) {
      el.textContent = countdownText(Number(el.dataset.expires) - now);
    });
  }

  // Run fn now and again after each answer: soon while the page shows something in motion.
  // Returns a function that polls at once (after the page changed).
  function every(fn, root) {
    var running = false, timer = null;
    function schedule() {
      clearTimeout(timer);
      timer = setTimeout(run, root.querySelector("[data-busy]") ? POLL_BUSY_MS : POLL_IDLE_MS);
    }
    function run() {
      if (running) return;
      if (document.hidden) { schedule(); return; }
      running = true;
      Promise.resolve().then(fn).catch(function () { /* network hiccup: try again next round */ })
        .then(function () { running = false; schedule(); });
    }
    document.addEventListener("visibilitychange", function () { if (!document.hidden) run(); });
    schedule();
    return run;
  }

  function signedOut(res) {
    if (res.status === 401 || (res.redirected && new URL(res.url).pathname === "/console/login")) {
      window.location.reload();
      return true;
    }
    return false;
  }

  function setBadge(el, status) {
    if (!el) return;
    el.textContent = status;
    el.className = "badge s-" + status.toLowerCase();
  }

  // Destructive forms ask first; a submitted form's button is disabled against double submits.
  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      e.preventDefault();
      return;
    }
    if (form.method.toLowerCase() === "post") {
      setTimeout(function () {
        form.querySelectorAll("button[type=submit]").forEach(function (b) { b.disabled = true; });
      }, 0);
    }
  });

  localize(document);
  tick();
  setInterval(tick, 1000);

  // --- list page --------------------------------------------------------------------------------
  var results = document.getElementById("results");
  var filters = document.getElementById("filters");
  if (results && filters) {
    var seq = 0, timer = null;

    // The form follows the URL after links (sort, pages: only the hidden sort fields) and history
    // moves (every field). After the form's own changes it is already right, and rewriting it then
    // would wipe what the user typed while the answer was on its way.
    var syncForm = function (url, hiddenOnly) {
      var params = new URL(url, window.location.href).searchParams;
      Array.prototype.forEach.call(filters.elements, function (el) {
        if (!el.name || (hiddenOnly && el.type !== "hidden")) return;
        if (el.tagName === "SELECT") {
          var want = params.get(el.name);
          if (want === null) want = el.name === "feature" ? "NOTEBOOK" : el.name === "limit" ? "10" : "";
          el.value = want.toUpperCase();
        } else if (el.type !== "submit") {
          el.value = params.get(el.name) || "";
        }
      });
    };

    var load = function (url, mode) {
      var mine = ++seq;
      return fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } }).then(function (res) {
        if (mine !== seq || signedOut(res)) return null;
        return res.text().then(function (html) {
          if (mine !== seq) return;
          var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("results");
          if (!fresh) { window.location.href = url; return; }
          results.innerHTML = fresh.innerHTML;
          var u = new URL(url, window.location.href);
          if (mode === "push") window.history.pushState(null, "", u.pathname + u.search);
          else if (mode === "replace") window.history.replaceState(null, "", u.pathname + u.search);
          if (mode !== "replace") syncForm(u.href, mode === "push");
          localize(results);
          tick();
          pollList();
        });
      });
    };

    var filterUrl = function () {
      var params = new URLSearchParams();
      new FormData(filters).forEach(function (value, key) {
        if (value !== "") params.append(key, value);
      });
      var qs = params.toString();  // no offset: a new filter starts at the first page
      return filters.getAttribute("action") + (qs ? "?" + qs : "");
    };

    filters.addEventListener("input", function (e) {
      if (e.target.tagName !== "INPUT") return;
      clearTimeout(timer);
      timer = setTimeout(function () { load(filterUrl(), "replace"); }, DEBOUNCE_MS);
    });
    filters.addEventListener("change", function (e) {
      if (e.target.tagName !== "SELECT") return;
      clearTimeout(timer);
      load(filterUrl(), "replace");
    });
    filters.addEventListener("submit", function (e) {
      e.preventDefault();
      clearTimeout(timer);
      load(filterUrl(), "replace");
    });
    results.addEventListener("click", function (e) {
      var a = e.target.closest("a.nav");
      if (!a || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
      e.preventDefault();
      load(a.getAttribute("href"), "push");
    });
    window.addEventListener("popstate", function () {
      load(window.location.pathname + window.location.search, null);
    });

    var applyRow = function (row, s) {
      row.dataset.status = s.status;
      if (s.busy) row.dataset.busy = "1"; else delete row.dataset.busy;
      setBadge(row.querySelector("[data-role=status]"), s.status);
      var progress = row.querySelector("[data-role=progress]");
      if (progress) progress.textContent = s.progress || "";
      row.querySelectorAll("button[data-action]").forEach(function (b) {
        b.disabled = !s.actions[b.dataset.action];
      });
      var lease = row.querySelector("[data-role=lease]");
      if (lease) {
        var span = document.createElement("span");
        if (s.lease.expires_at) span.dataset.expires = s.lease.expires_at;
        else span.textContent = s.lease.text;
        lease.replaceChildren(span);
      }
    };

    var pollList = every(function () {
      var rows = Array.prototype.slice.call(results.querySelectorAll("tr[data-id]"));
      if (!rows.length) return null;
      var qs = rows.map(function (r) { return "id=" + encodeURIComponent(r.dataset.id); }).join("&");
      return fetch("/console/api/status?" + qs, { credentials: "same-origin" }).then(function (res) {
        if (signedOut(res) || !res.ok) return null;
        return res.json().then(function (data) {
          setServerNow(data.now);
          rows.forEach(function (r) {
            var s = data.notebooks[r.dataset.id];
            if (s) applyRow(r, s);
          });
          tick();
        });
      });
    }, results);
  }

  // --- detail page ------------------------------------------------------------------------------
  var live = document.getElementById("live");
  if (live) {
    var last = null, gone = false;
    every(function () {
      if (gone) return null;
      return fetch(live.dataset.src, { credentials: "same-origin" }).then(function (res) {
        if (signedOut(res)) return null;
        if (res.status === 404) {
          gone = true;
          setBadge(live.querySelector("[data-role=status]"), "DELETED");
          live.querySelectorAll("button, select").forEach(function (b) { b.disabled = true; });
          var open = live.querySelector("#open-lab");
          if (open) open.replaceWith(Object.assign(document.createElement("span"),
            { className: "button primary disabled", textContent: "Open JupyterLab" }));
          var note = document.createElement("div");
          note.className = "flash error";
          note.textContent = "This notebook no longer exists.";
          live.prepend(note);
          return null;
        }
        if (!res.ok) return null;
        return res.text().then(function (html) {
          if (html === last) return;
          var active = document.activeElement;
          if (last !== null && active && active.tagName === "SELECT" && live.contains(active)) return;  // user is choosing
          last = html;
          live.innerHTML = html;
          localize(live);
          tick();
        });
      });
    }, live);
  }
})();

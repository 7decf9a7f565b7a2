/*
 * cicada dashboard: polls the control API every second and draws the current run. Everything
 * it shows is written with textContent (never as HTML), so ids and labels cannot inject markup.
 * The run's timeline lives on the server: a reload fetches it whole and loses nothing.
 */
(function () {
  "use strict";
  var params = new URLSearchParams(location.search);
  var token = params.get("token") || sessionStorage.getItem("cicada-token") || "";
  if (params.get("token")) sessionStorage.setItem("cicada-token", token);

  var $ = function (sel) { return document.querySelector(sel); };
  var charts = window.cicadaCharts.mount($("#charts"), 560);
  var runId = null;
  var points = [];
  var formFilled = false;

  function api(method, path, body) {
    var headers = { accept: "application/json" };
    if (token) headers.authorization = "Bearer " + token;
    // Every state-changing call is JSON, even with nothing to say: the server refuses anything else.
    var changes = method !== "GET";
    if (changes) headers["content-type"] = "application/json";
    return fetch(path, { method: method, headers: headers, body: changes ? JSON.stringify(body === undefined ? {} : body) : undefined }).then(function (res) {
      if (res.status === 204) return null;
      return res.json().then(function (data) {
        if (!res.ok) throw new Error((data && data.errors ? data.errors : ["HTTP " + res.status]).join("\n"));
        return data;
      });
    });
  }

  function showError(err) { $("#error").textContent = err ? String(err.message || err) : ""; }

  function cell(tr, value) {
    var td = document.createElement("td");
    td.textContent = value === undefined || value === null ? "" : String(value);
    tr.appendChild(td);
    return td;
  }

  function fill(tbody, rows, build) {
    tbody.textContent = "";
    rows.forEach(function (r) {
      var tr = document.createElement("tr");
      build(tr, r);
      tbody.appendChild(tr);
    });
  }

  var ms = function (n) { return n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2); };

  function drawReport(rep) {
    var rows = Object.keys(rep.stats).map(function (k) { return [k, rep.stats[k]]; }).filter(function (e) { return e[1].count + e[1].failures > 0; });
    fill($("#stats tbody"), rows, function (tr, e) {
      var s = e[1];
      tr.setAttribute("data-row", e[0]);
      cell(tr, e[0]); cell(tr, s.count); cell(tr, s.failures);
      [s.p50_ms, s.p95_ms, s.p99_ms, s.max_ms, s.mean_ms].forEach(function (v) { cell(tr, s.latency_count ? ms(v) : "-"); });
      cell(tr, s.rate_per_s);
    });
    var fails = [];
    Object.keys(rep.errors).forEach(function (row) {
      Object.keys(rep.errors[row]).forEach(function (why) { fails.push([row, why, rep.errors[row][why]]); });
    });
    fill($("#failures tbody"), fails, function (tr, f) { cell(tr, f[0]); cell(tr, f[1]); cell(tr, f[2]); });
    var procs = [];
    if (rep.machines) rep.machines.forEach(function (m) { procs.push(["machine " + m.id + " (" + m.host + ")", m.pid, m.connected, (m.rss / 1048576).toFixed(0), m.lost ? "lost" : "—"]); });
    if (rep.workers) rep.workers.list.forEach(function (w) { procs.push(["worker " + w.slot, w.pid, w.connected, (w.rss / 1048576).toFixed(0), w.restarts]); });
    if (!rep.workers && !rep.machines) procs.push(["this process", "", rep.users.connected, (rep.health.rss_bytes / 1048576).toFixed(0), 0]);
    fill($("#workers tbody"), procs, function (tr, p) { p.forEach(function (v) { cell(tr, v); }); });
    $("#summary").textContent = rep.users.connected + " / " + rep.users.target + " connected" + (rep.health.kept_up ? "" : " — generator NOT keeping up");
    var p = rep.publishes;
    $("#publishes").textContent = p ? "Publishes: " + p.sent + " sent = " + p.acked + " acked + " + p.failed + " failed + " + p.in_flight + " in flight" + (p.skipped ? " (" + p.skipped + " skipped)" : "") : "";
    var t = rep.throughput;
    var e2e = rep.stats.e2e;
    $("#throughput").textContent = t
      ? "Throughput over the run: sent " + t.sent_per_s + " msg/s (" + t.sent_mb_per_s + " MB/s) · acked " + t.acked_per_s + " msg/s" +
        (t.delivered_per_s !== undefined ? " · delivered " + t.delivered_per_s + " msg/s (" + t.delivered_mb_per_s + " MB/s)" : "") +
        (e2e && e2e.latency_count ? " · e2e p50 " + e2e.p50_ms + " ms, p99 " + e2e.p99_ms + " ms" : "")
      : "";
    var i = rep.integrity;
    $("#integrity").textContent = i
      ? "Integrity: " + i.delivered + " of " + i.published + " published delivered, " + i.lost + " lost (so far, while running), " + i.duplicated + " duplicated, " + i.reordered + " out of order" +
        (i.commands_sent ? "; commands " + i.commands_received + " of " + i.commands_sent + " received" : "")
      : "";
  }

  function fillForm(defaults) {
    if (formFilled) return;
    formFilled = true;
    var f = $("#start");
    ["users", "rate", "host", "port", "duration"].forEach(function (k) { if (defaults[k] !== undefined) f.elements[k].value = defaults[k]; });
    // The scenarios the server's --scenarios directory holds, by name.
    (defaults.scenarios || []).forEach(function (name) {
      var o = document.createElement("option");
      o.value = name;
      $("#scenario-names").appendChild(o);
    });
  }

  function poll() {
    var since = points.length ? points[points.length - 1].t : -1;
    return api("GET", "/api/status?since=" + since).then(function (st) {
      fillForm(st.defaults);
      var state = $("#state");
      state.textContent = st.state;
      state.setAttribute("data-state", st.state);
      var cur = st.current;
      if (!cur) return;
      if (cur.id !== runId) {
        // Another run (or a reload): take its whole timeline.
        runId = cur.id;
        points = [];
        return api("GET", "/api/runs/" + encodeURIComponent(cur.id)).then(draw);
      }
      draw(cur);
    }).catch(showError);
  }

  function draw(run) {
    $("#run-id").textContent = run.id;
    $("#run-label").textContent = run.label;
    var fresh = run.report.timeline || [];
    var last = points.length ? points[points.length - 1].t : -1;
    fresh.forEach(function (p) { if (p.t > last) points.push(p); });
    charts.update(points);
    $("#charts").setAttribute("data-points", String(points.length));
    drawReport(run.report);
  }

  function download(id, format) {
    api("GET", "/api/runs/" + encodeURIComponent(id)).then(function () {
      var headers = token ? { authorization: "Bearer " + token } : {};
      return fetch("/api/runs/" + encodeURIComponent(id) + "/report/" + format, { headers: headers });
    }).then(function (res) { return res.blob(); }).then(function (blob) {
      var a = document.createElement("a");
      a.href = URL.createObjectURL(blob);
      a.download = "cicada-" + id + "." + format;
      a.click();
      setTimeout(function () { URL.revokeObjectURL(a.href); }, 10000);
    }).catch(showError);
  }

  function history() {
    return api("GET", "/api/runs").then(function (runs) {
      fill($("#history tbody"), runs, function (tr, r) {
        tr.setAttribute("data-run", r.id);
        cell(tr, new Date(r.started).toLocaleString()); cell(tr, r.id); cell(tr, r.label); cell(tr, r.state); cell(tr, r.users); cell(tr, r.publish); cell(tr, r.failures);
        var td = cell(tr, "");
        ["json", "csv", "html"].forEach(function (fmt) {
          var b = document.createElement("button");
          b.type = "button";
          b.textContent = fmt.toUpperCase();
          b.setAttribute("data-format", fmt);
          b.addEventListener("click", function () { download(r.id, fmt); });
          td.appendChild(b);
        });
      });
    }).catch(showError);
  }

  $("#start").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var f = ev.target.elements;
    var body = { users: Number(f.users.value), rate: Number(f.rate.value), host: f.host.value, port: f.port.value };
    if (f.duration.value) body.duration = f.duration.value;
    if (f.label.value) body.label = f.label.value;
    if (f.scenario.value) body.scenario = f.scenario.value;
    showError(null);
    api("POST", "/api/runs", body).then(function () { return poll(); }).then(history).catch(showError);
  });
  $("#apply").addEventListener("click", function () {
    var body = {};
    if ($("#set-users").value !== "") body.users = Number($("#set-users").value);
    if ($("#set-rate").value !== "") body.rate = Number($("#set-rate").value);
    var mr = $("#set-msg-rate").value.trim();
    if (mr !== "") body.msg_rate = mr === "max" ? "max" : Number(mr);
    api("PATCH", "/api/runs/current", body).then(function () { showError(null); }).catch(showError);
  });
  $("#pause").addEventListener("click", function () {
    var b = $("#pause");
    var next = b.getAttribute("data-publish") === "on" ? "off" : "on";
    api("PATCH", "/api/runs/current", { publish: next }).then(function () {
      showError(null);
      b.setAttribute("data-publish", next);
      b.textContent = next === "on" ? "Pause publishing" : "Resume publishing";
    }).catch(showError);
  });
  $("#reset").addEventListener("click", function () { api("POST", "/api/runs/current/reset-stats").then(function () { points = []; runId = null; }).catch(showError); });
  $("#stop").addEventListener("click", function () { api("POST", "/api/runs/current/stop").then(poll).then(history).catch(showError); });

  poll().then(history);
  setInterval(poll, 1000);
  setInterval(history, 5000);
})();

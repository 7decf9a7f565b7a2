/* cicada charts: uPlot over a run's timeline points. Used by the dashboard and the HTML report. */
(function () {
  "use strict";
  var SPECS = [
    { id: "rate", title: "Messages per second", series: [["publish_per_s", "publish/s", "#2b7bb9"], ["recv_per_s", "recv/s", "#7a4fb5"]] },
    { id: "devices", title: "Connected devices", series: [["connected", "connected", "#2a9d55"], ["target", "target", "#9aa0a6"]] },
    { id: "latency", title: "Publish latency, ms (p50 / p95 / p99 of each 2 s)", series: [["p50_ms", "p50", "#2b7bb9"], ["p95_ms", "p95", "#e69b00"], ["p99_ms", "p99", "#d1495b"]] },
    { id: "failures", title: "Failures per second", series: [["failures_per_s", "failures/s", "#d1495b"]] },
  ];

  function toData(spec, points) {
    var data = [points.map(function (p) { return p.t; })];
    spec.series.forEach(function (s) { data.push(points.map(function (p) { return p[s[0]]; })); });
    return data;
  }

  /** Mounts the four charts in `container`; returns { update(points), charts }. */
  function mount(container, width) {
    var charts = SPECS.map(function (spec) {
      var box = document.createElement("div");
      box.className = "chart";
      box.setAttribute("data-chart", spec.id);
      container.appendChild(box);
      var opts = {
        title: spec.title,
        width: width || 560,
        height: 220,
        scales: { x: { time: false } },
        axes: [{ label: "seconds" }, {}],
        series: [{ label: "t (s)" }].concat(spec.series.map(function (s) { return { label: s[1], stroke: s[2], width: 2 }; })),
      };
      return { spec: spec, plot: new uPlot(opts, toData(spec, []), box) };
    });
    return {
      charts: charts,
      update: function (points) {
        charts.forEach(function (c) { c.plot.setData(toData(c.spec, points)); });
      },
    };
  }

  window.cicadaCharts = { mount: mount };
})();

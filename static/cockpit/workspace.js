// The workspace tiles: each performance indicator's values (embedded in the page as JSON next
// to a table of the same values) drawn as bars or columns with uPlot (vendored in
// static/vendor/uplot), or as a donut on a canvas, which uPlot does not draw. Once a chart is
// drawn its table folds away; without JavaScript the table is what shows.
"use strict";
(function () {
  const COLORS = ["#0a6ed1", "#107e3e", "#c35500", "#bb0000", "#6c32a9", "#5b6b7d", "#0092a8", "#8b7d00"];
  const STATUS_COLORS = { "On Track": "#107e3e", "At Risk": "#c35500", "Critical": "#bb0000" };
  const HEIGHT = 220;

  function color(label, index) { return STATUS_COLORS[label] || COLORS[index % COLORS.length]; }

  // The chart's box is hidden while empty (.pv-chart:empty, for pages without JavaScript), so
  // its width is 0 until something is in it: measure it shown, to draw at the tile's width.
  function widthOf(el) {
    el.style.display = "flex";
    const width = el.clientWidth;
    el.style.display = "";
    return width;
  }

  function series(data) {
    const values = data.values.map((v) => (v === null ? 0 : v));
    return data.duration ? values.map((v) => v / 3600) : values;
  }

  function bars(el, data) {
    const horizontal = data.chart === "bar";
    const xs = data.labels.map((_, i) => i);
    const categories = {
      scale: "x", side: horizontal ? 3 : 2, size: horizontal ? 110 : 50, gap: 4,
      splits: () => xs, values: (u, splits) => splits.map((i) => data.labels[i] ?? ""),
    };
    const measure = { scale: "y", side: horizontal ? 0 : 3, label: data.duration ? "hours" : "" };
    return new uPlot({
      width: Math.max(widthOf(el), 240), height: HEIGHT, legend: { show: false }, cursor: { show: false },
      scales: {
        x: { time: false, range: [-0.5, xs.length - 0.5], ori: horizontal ? 1 : 0, dir: horizontal ? -1 : 1 },
        y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1], ori: horizontal ? 0 : 1 },
      },
      axes: [categories, measure],
      series: [{}, { label: "value", fill: "#0a6ed1cc", stroke: "#0a6ed1", paths: uPlot.paths.bars({ size: [0.6, 60] }), points: { show: false } }],
    }, [xs, series(data)], el);
  }

  function donut(el, data) {
    const values = series(data);
    const total = values.reduce((a, b) => a + b, 0);
    const canvas = document.createElement("canvas");
    const size = HEIGHT, ratio = window.devicePixelRatio || 1;
    canvas.width = size * ratio; canvas.height = size * ratio;
    canvas.style.width = size + "px"; canvas.style.height = size + "px";
    const ctx = canvas.getContext("2d");
    ctx.scale(ratio, ratio);
    let angle = -Math.PI / 2;
    values.forEach((value, i) => {
      if (!total || !value) return;
      const sweep = (value / total) * 2 * Math.PI;
      ctx.beginPath();
      ctx.arc(size / 2, size / 2, size / 2 - 4, angle, angle + sweep);
      ctx.arc(size / 2, size / 2, size / 4, angle + sweep, angle, true);
      ctx.closePath();
      ctx.fillStyle = color(data.labels[i], i);
      ctx.fill();
      angle += sweep;
    });
    ctx.fillStyle = "#1d2d3e"; ctx.font = "600 20px system-ui, sans-serif";
    ctx.textAlign = "center"; ctx.textBaseline = "middle";
    ctx.fillText(String(Math.round(total * 100) / 100), size / 2, size / 2);
    const legend = document.createElement("ul");
    legend.className = "pv-legend";
    data.labels.forEach((label, i) => {
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.style.background = color(label, i);
      item.append(swatch, document.createTextNode(`${label}: ${data.values[i] ?? "—"}`));
      legend.append(item);
    });
    el.append(canvas, legend);
  }

  document.querySelectorAll(".pv-chart[data-source]").forEach((el) => {
    const source = document.getElementById(el.dataset.source);
    if (!source) return;
    const data = JSON.parse(source.textContent);
    try {
      if (data.chart === "donut") donut(el, data); else bars(el, data);
      const table = el.parentElement.querySelector("details.pv-values");
      if (table) table.open = false;
      el.dataset.drawn = "true";
    } catch (error) {
      el.dataset.error = String(error);  // the table stays open
    }
  });
})();

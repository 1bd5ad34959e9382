// The Monitor tab's chart: per-minute publish / consume / acknowledge / deliver counts of the
// last hour (kept in the database by the server), summed over the queues or for one, redrawn
// every 15 s. uPlot is vendored in static/vendor/uplot.
"use strict";
(function () {
  const chart = document.getElementById("rates-chart");
  const select = document.getElementById("rate-queue");
  const totals = document.getElementById("rates-totals");
  if (!chart || !chart.dataset.url) return;
  const SERIES = [["published", "#0a6ed1"], ["consumed", "#107e3e"], ["acknowledged", "#6c32a9"],
    ["delivered", "#c35500"], ["delivery_failed", "#bb0000"], ["dead_lettered", "#5b6b7d"]];
  let plot = null;

  function columns(answer) {
    const queues = answer.queues.filter((q) => !select.value || q.queue === select.value);
    const times = answer.minutes.map((m) => Date.parse(m) / 1000);
    const sums = SERIES.map(([name]) => times.map((_, i) => queues.reduce((n, q) => n + q[name][i], 0)));
    return [times, ...sums];
  }

  async function draw() {
    const response = await fetch(chart.dataset.url, { credentials: "same-origin" });
    if (!response.ok) return;
    const data = columns(await response.json());
    totals.textContent = SERIES.map(([name], i) => `${name.replace("_", " ")}: ${data[i + 1].reduce((a, b) => a + b, 0)}`).join(" · ");
    chart.dataset.total = String(data[1].reduce((a, b) => a + b, 0));
    if (plot) { plot.setData(data); return; }
    plot = new uPlot({
      width: Math.max(chart.clientWidth, 300), height: 280,
      series: [{}, ...SERIES.map(([label, stroke]) => ({ label: label.replace("_", " "), stroke, width: 2 }))],
      axes: [{}, { label: "per minute" }],
    }, data, chart);
  }

  select.addEventListener("change", draw);
  window.addEventListener("resize", () => plot && plot.setSize({ width: Math.max(chart.clientWidth, 300), height: 280 }));
  draw();
  setInterval(draw, 15000);
})();

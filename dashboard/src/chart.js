// Charts through Chart.js (npm), registered piecemeal so the bundle carries only what is drawn.
// Every chart has a titled y axis with its unit and a titled x axis.

import {
  BarController, BarElement, CategoryScale, Chart, Filler, Legend, LinearScale, LineController,
  LineElement, PointElement, Tooltip,
} from "chart.js";

Chart.register(BarController, BarElement, CategoryScale, Filler, Legend, LinearScale, LineController,
  LineElement, PointElement, Tooltip);
Chart.defaults.font.family = getComputedStyle(document.documentElement).getPropertyValue("--font") || "system-ui";
Chart.defaults.color = "#475569";
Chart.defaults.animation = false;

export const PALETTE = ["#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#06b6d4", "#ec4899",
  "#84cc16", "#f97316", "#64748b", "#14b8a6", "#a855f7"];

/**
 * A bar (or line) chart in `canvas`.
 * spec: {labels, datasets: [{label, data, text?: [exact strings for the tooltip], color?, width?, order?}], x, y,
 * stacked, type}
 */
export function drawChart(canvas, spec) {
  const datasets = spec.datasets.map((d, i) => ({
    label: d.label, data: d.data, text: d.text,
    backgroundColor: spec.type === "line" ? `${d.color || PALETTE[i % PALETTE.length]}33` : d.color || PALETTE[i % PALETTE.length],
    borderColor: d.color || PALETTE[i % PALETTE.length], borderWidth: spec.type === "line" ? d.width || 2 : 0,
    order: d.order,
    fill: spec.type === "line" && spec.datasets.length === 1, pointRadius: spec.type === "line" ? 0 : undefined,
    tension: 0.2, yAxisID: d.axis || "y",
  }));
  const scales = {
    x: { stacked: spec.stacked, title: { display: true, text: spec.x }, grid: { display: false },
      ticks: { maxRotation: 0, autoSkipPadding: 12 } },
    y: { stacked: spec.stacked, beginAtZero: true, title: { display: true, text: spec.y },
      ticks: { callback: spec.yTick || undefined },
      // What the axis reads, on the canvas (the pixels cannot be read back): the tests check it.
      afterTickToLabelConversion: (scale) => {
        canvas.dataset.yTicks = JSON.stringify(scale.ticks.map((t) => t.label));
      } },
  };
  if (spec.y2) {
    scales.y2 = { position: "right", beginAtZero: true, grid: { drawOnChartArea: false },
      title: { display: true, text: spec.y2 }, ticks: { callback: spec.y2Tick || undefined } };
  }
  return new Chart(canvas, {
    type: spec.type || "bar",
    data: { labels: spec.labels, datasets },
    options: {
      responsive: true, maintainAspectRatio: false, interaction: { mode: "index", intersect: false },
      scales,
      plugins: {
        legend: { display: spec.datasets.length > 1, position: "bottom" },
        tooltip: {
          callbacks: {
            label: (ctx) => {
              const text = ctx.dataset.text ? ctx.dataset.text[ctx.dataIndex] : ctx.formattedValue;
              return `${ctx.dataset.label}: ${text}`;
            },
          },
        },
      },
    },
  });
}

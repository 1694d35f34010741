// Explore: any metric by any group (and an optional second, stacked), with filters, a chart,
// a table whose totals come from the API (each request once), and CSV of exactly what is shown.
// The whole state is in the URL.

import { usage } from "../api.js";
import { drawChart } from "../chart.js";
import { field, h, select } from "../dom.js";
import { bucketLabel, count, money, ms, percent, score, tick } from "../format.js";
import { filterBar, filtersOf, keyIndex, labelNames } from "../filters.js";
import { loading, moneyText, pageHeader, panel, planNote, table } from "../ui.js";

export const METRICS = {
  cost: { label: "Spend", unit: "USD", value: (m) => Number(m.cost), text: (m) => money(m.cost), additive: true },
  requests: { label: "Requests", unit: "requests", value: (m) => m.requests, text: (m) => count(m.requests), additive: true },
  input_tokens: { label: "Input tokens", unit: "tokens", value: (m) => m.input_tokens, text: (m) => count(m.input_tokens), additive: true },
  output_tokens: { label: "Output tokens", unit: "tokens", value: (m) => m.output_tokens, text: (m) => count(m.output_tokens), additive: true },
  cached_tokens: { label: "Cached tokens", unit: "tokens", value: (m) => m.cached_tokens, text: (m) => count(m.cached_tokens), additive: true },
  reasoning_tokens: { label: "Reasoning tokens", unit: "tokens", value: (m) => m.reasoning_tokens, text: (m) => count(m.reasoning_tokens), additive: true },
  errors: { label: "Errors", unit: "requests", value: (m) => m.errors, text: (m) => count(m.errors), additive: true },
  error_rate: { label: "Error rate", unit: "%", value: (m) => m.error_rate * 100, text: (m) => percent(m.error_rate) },
  latency_p50: { label: "Latency p50", unit: "ms", value: (m) => m.latency_ms.p50, text: (m) => ms(m.latency_ms.p50) },
  latency_p95: { label: "Latency p95", unit: "ms", value: (m) => m.latency_ms.p95, text: (m) => ms(m.latency_ms.p95) },
  latency_p99: { label: "Latency p99", unit: "ms", value: (m) => m.latency_ms.p99, text: (m) => ms(m.latency_ms.p99) },
  ttft_p50: { label: "Time to first token p50", unit: "ms", value: (m) => m.ttft_ms.p50, text: (m) => ms(m.ttft_ms.p50) },
  feedback: { label: "Feedback mean score", unit: "score 0–1", value: (m) => m.feedback.mean_score, text: (m) => score(m.feedback) },
};

export function groupOptions(names) {
  return [
    ["model", "Model (requested)"], ["served_model", "Served model"], ["provider", "Provider"], ["key", "API key"],
    ["status", "HTTP status"], ...names.map((n) => [`label.${n}`, `Label: ${n}`]), ["tag", "Tag (as sent)"],
    ...[1, 2, 3, 4].map((n) => [`tag_level.${n}`, `Tag level ${n}`]),
    ["time.hour", "Time: hour"], ["time.day", "Time: day"], ["time.month", "Time: month"],
  ];
}

const groupText = (row, dim, keyNames) => {
  const v = row.group[dim];
  if (v === null || v === undefined) return dim.startsWith("tag") ? "(untagged)" : dim.startsWith("label.") ? "(no label)" : "—";
  if (dim === "key") return keyNames.get(v) || row.key_name || v;
  if (dim.startsWith("time.")) return String(v);
  return String(v);
};

/** The columns of the table (and of the CSV). */
function columns(dims, keyNames, metric, dimLabel) {
  const order = ["requests", "cost", "input_tokens", "output_tokens", "errors", "error_rate", "latency_p50",
    "latency_p95", "feedback"];
  if (!order.includes(metric)) order.splice(2, 0, metric);
  return [
    ...dims.map((d) => ({ label: dimLabel(d), csv: (r) => groupText(r, d, keyNames),
      value: (r) => h("span", { class: "long" }, groupText(r, d, keyNames)), total: null })),
    ...order.map((name) => {
      const m = METRICS[name];
      const csv = (r) => (name === "cost" ? r.cost : name === "feedback" ? (r.feedback.mean_score ?? "") : m.text(r));
      const value = (r) => (name === "cost" ? moneyText(r.cost) : m.text(r));
      return { label: m.unit === "USD" ? `${m.label} (USD)` : m.label, num: true, csv, value, total: value,
        totalCsv: csv, highlight: name === metric };
    }),
  ];
}

function toCsv(cols, rows, totals) {
  const esc = (v) => {
    const s = v === null || v === undefined ? "" : String(v);
    return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  const lines = [cols.map((c) => esc(c.label)).join(",")];
  for (const r of rows) lines.push(cols.map((c) => esc(c.csv(r))).join(","));
  lines.push(cols.map((c, i) => esc(c.totalCsv ? c.totalCsv(totals) : i === 0 ? "Total (each request once)" : "")).join(","));
  return `${lines.join("\n")}\n`;
}

function chartSpec(doc, dims, metric, keyNames, dimLabel) {
  const m = METRICS[metric];
  const [d1, d2] = dims;
  const isTime = d1.startsWith("time.");
  const xKeys = [];
  for (const r of doc.data) {
    const k = groupText(r, d1, keyNames);
    if (!xKeys.includes(k)) xKeys.push(k);
  }
  const xs = isTime ? xKeys : xKeys.slice(0, 25);
  const label = (k) => (isTime ? bucketLabel(k, d1.slice(5)) : k);
  const series = new Map();
  for (const r of doc.data) {
    const s = d2 ? groupText(r, d2, keyNames) : m.label;
    if (!series.has(s)) series.set(s, new Map());
    series.get(s).set(groupText(r, d1, keyNames), r);
  }
  const names = [...series.keys()].slice(0, 10);
  return {
    type: isTime && !d2 ? "line" : "bar",
    stacked: Boolean(d2) && m.additive,
    labels: xs.map(label),
    x: dimLabel(d1),
    y: `${m.label} (${m.unit})`,
    yTick: m.unit === "USD" ? (v) => `$${tick(v)}` : m.unit === "ms" ? (v) => `${tick(v)} ms` : (v) => count(v),
    datasets: names.map((s) => ({
      label: s,
      data: xs.map((x) => (series.get(s).has(x) ? m.value(series.get(s).get(x)) : null)),
      text: xs.map((x) => (series.get(s).has(x) ? m.text(series.get(s).get(x)) : "—")),
    })),
    truncated: xKeys.length > xs.length || series.size > names.length,
  };
}

/** The API's note ("rows overlap: …") as a sentence: capitalised, one full stop. */
const sentence = (text) => `${text.charAt(0).toUpperCase()}${text.slice(1).replace(/\.?$/, ".")}`;

export default {
  title: "Explore", icon: "◧", fallbackRange: "month",
  async render(main, ctx) {
    const p = ctx.params;
    const keys = await keyIndex();
    const names = labelNames(keys);
    const keyNames = new Map(keys.map((k) => [k.id, k.name]));
    const metric = METRICS[p.get("metric")] ? p.get("metric") : "cost";
    const group = p.get("group") || "model";
    const group2 = p.get("group2") || "";
    const shown = [50, 200, 500].includes(Number(p.get("rows"))) ? Number(p.get("rows")) : 50;
    const options = groupOptions(names);
    const extra = [
      field("Metric", select({ name: "metric", id: "x-metric" }, Object.entries(METRICS).map(([k, m]) => [k, m.label]), metric)),
      field("Group by", select({ name: "group", id: "x-group" }, options, group)),
      field("Then by (stacked)", select({ name: "group2", id: "x-group2" }, [["", "—"], ...options], group2)),
      field("Table rows", select({ name: "rows" }, [["50", "50"], ["200", "200"], ["500", "500"]], String(shown))),
    ];
    main.append(pageHeader("Explore", "Any metric by any group. The URL holds the whole view: bookmark it or send it."),
      filterBar(p, ctx.apply, { keys, fallback: "month", extra }));
    const body = h("div", { class: "explore" });
    main.append(body);
    const f = filtersOf(p, "month");
    const dims = [group, group2].filter(Boolean);
    const doc = await loading(body, usage(f, dims, { limit: 500 }), "Asking the analytics API");
    if (!ctx.isCurrent()) return;
    if (!group.startsWith("time.") && metric !== "cost") {  // the API orders by cost; re-rank by the metric
      const v = (r) => METRICS[metric].value(r) ?? -Infinity;
      doc.data = [...doc.data].sort((a, b) => v(b) - v(a));
    }
    const dimLabel = (d) => `${(options.find(([v]) => v === d) || [d, d])[1]}${d.startsWith("time.") ? ` (${doc.plan.timezone})` : ""}`;
    const spec = chartSpec(doc, dims, metric, keyNames, dimLabel);
    const canvas = h("canvas", { role: "img", "aria-label": `${METRICS[metric].label} by ${dims.join(" and ")}` });
    body.append(panel(`${METRICS[metric].label} by ${dims.map(dimLabel).join(", then by ")}`,
      h("div", { class: "chart-box tall" }, canvas),
      spec.truncated ? h("span", { class: "badge" }, "chart shows the largest groups; the table has them all") : null));
    drawChart(canvas, spec);
    const cols = columns(dims, keyNames, metric, dimLabel);
    const rows = doc.data.slice(0, shown);
    const csv = toCsv(cols, rows, doc.totals);
    const download = h("a", { class: "button", id: "csv-export", download: "tallygate-explore.csv",
      href: URL.createObjectURL(new Blob([csv], { type: "text/csv" })) }, "Download CSV");
    const title = rows.length < doc.row_count ? `Largest ${count(rows.length)} of ${count(doc.row_count)} rows`
      : `${count(doc.row_count)} rows`;
    body.append(panel(title, [
      doc.overlapping ? h("p", { class: "overlap-note", role: "note" }, h("span", { class: "overlap-mark", "aria-hidden": "true" }),
        sentence(doc.note)) : null,
      table(cols.map((c) => ({ ...c, label: c.highlight ? `${c.label} ▾` : c.label })), rows, {
        totals: doc.totals, class: doc.overlapping ? "data overlapping" : "data",
        rowClass: () => (doc.overlapping ? "overlap-row" : null),
      }),
      planNote(doc),
    ], download));
  },
};

// On call: what an engineer paged at night needs on one page. The last hours minute by minute
// against the same hours of the previous days, what rose the most (tag, key, label, model), the
// alerts that fired; every row links to the logs of its slice and window. "The last N hours" are
// counted to the minute: 04:26 to 07:26 at 07:25 for the last 3 hours (the current minute included).
//
// Composed from the public APIs: `/v1/analytics/oncall` (the minutes of every window and, per
// dimension, the groups now and summed over the previous days: one scan each on the server) and
// `/v1/alerts`. "The same hours" of a previous day are 24 hours earlier.

import { get } from "../api.js";
import { drawChart } from "../chart.js";
import { field, h, select } from "../dom.js";
import { clock, count, money, percent, picoMean, picoText, tick, toPico } from "../format.js";
import { keyIndex, labelNames, offsetMs, wallIso, zoneField, zoneOf } from "../filters.js";
import { card, loading, moneyText, pageHeader, panel, table } from "../ui.js";

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const HOURS = [1, 3, 6, 12, 24];
const DAYS = [1, 3, 7];
const MOVERS_SHOWN = 5;
const ROWS = 1000; // rows asked per dimension, now and summed before; a value past them has no known baseline

/** What is compared: each as a BigInt (spend in picodollars) or a number, and as text. */
const METRICS = {
  cost: { label: "Spend", unit: "USD", of: (r) => toPico(r.cost), text: (v) => money(picoText(v)), zero: 0n },
  requests: { label: "Requests", unit: "requests", of: (r) => r.requests, text: (v) => count(v), zero: 0 },
  errors: { label: "Errors", unit: "requests", of: (r) => r.errors, text: (v) => count(v), zero: 0 },
};

const sum = (values, zero) => values.reduce((a, b) => a + b, zero);
/** The mean of previous days: exact to the picodollar for spend, one decimal for counts. */
function mean(total, days, metric) {
  return metric === "cost" ? picoMean(total, days) : total / days;
}
/** Spend (BigInt picodollars) to three significant digits under a dollar, else cents: for a mean or a rise. */
function roughMoney(pico) {
  const n = Number(pico) / 1e12;
  const abs = Math.abs(n);
  const digits = abs >= 1 || abs === 0 ? 2 : Math.min(12, 2 - Math.floor(Math.log10(abs)));
  return money(n.toFixed(digits));
}
function meanText(v, metric) {
  return metric === "cost" ? roughMoney(v) : Number.isInteger(v) ? count(v) : v.toFixed(1);
}
/** The exact figure (for the title and tests): picodollars as dollars, a count, or a mean to 1 decimal. */
const exactText = (v, metric) => (metric === "cost" ? picoText(v) : Number.isInteger(v) ? String(v) : v.toFixed(1));
function changeText(now, usual, metric) {
  const diff = now - usual;
  const sign = diff > 0 ? "+" : diff < 0 ? "−" : "±";
  const abs = diff < 0 ? -diff : diff;
  return `${sign}${metric === "cost" ? roughMoney(abs) : Number.isInteger(abs) ? count(abs) : abs.toFixed(1)}`;
}
function ratioText(now, usual) {
  if (!(Number(usual) > 0)) return "new";
  const pct = ((Number(now) - Number(usual)) / Number(usual)) * 100;
  return Math.abs(pct) < 1 ? "±0 %" : `${pct > 0 ? "+" : "−"}${Math.abs(pct).toFixed(0)} %`;
}

/**
 * The windows compared: [from, to) now, then 24 h earlier for each previous day. A window runs
 * through the current minute and is `hours` long exactly: it does not reach back to the hour.
 */
function windowsOf(hours, days, now) {
  const to = Math.floor(now / MINUTE) * MINUTE + MINUTE;
  const from = to - hours * HOUR;
  return Array.from({ length: days + 1 }, (_, k) => ({ from: from - k * DAY, to: to - k * DAY, back: k }));
}

/** The logs of a slice over a window (absolute ms), as a dashboard URL in zone `tz`. */
export function logsHref(filter, from, to, tz, withZone) {
  const q = new URLSearchParams({ ...filter, from: wallIso(from + offsetMs(from, tz), tz), to: wallIso(to + offsetMs(to, tz), tz) });
  if (withZone) q.set("tz", tz);
  return `/dashboard/logs?${q}`;
}

const DIMENSIONS = (label) => [
  { name: "tag_level.2", title: "Tags", label: "Tag (2 levels)", filter: (v) => ({ tag: v }) },
  { name: "key", title: "Keys", label: "Key", filter: (v) => ({ key: v }) },
  { name: `label.${label}`, title: `Label ${label}`, label: `Label ${label}`, filter: (v) => ({ [`label.${label}`]: v }) },
  { name: "model", title: "Models", label: "Model (requested)", filter: (v) => ({ model: v }) },
];

/**
 * The values of one dimension ranked by increase of `metric` against the mean of the previous
 * `days`. `part.now` holds the groups now, `part.before` the same groups summed over the previous
 * days. A value missing from `before` when it had more rows than were returned has no known
 * baseline and is left out (said under the table).
 */
export function movers(part, days, dim, metric) {
  const m = METRICS[metric];
  const { now: current, before } = part;
  const truncated = before.row_count > before.data.length;
  const past = new Map(before.data.map((x) => [x.group[dim], x]));
  const rows = [];
  for (const r of current.data) {
    const value = r.group[dim];
    if (value === null || value === undefined) continue;
    const p = past.get(value);
    if (!p && truncated) continue;
    const total = p ? m.of(p) : m.zero;
    const now = m.of(r);
    const usual = mean(total, days, metric);
    // the rise, compared exactly: picodollars (against the rounded mean), or counts times the days
    const rise = metric === "cost" ? now - usual : now * days - total;
    if (rise > 0) rows.push({ value, name: r.key_name || value, now, usual, rise });
  }
  rows.sort((a, b) => (b.rise > a.rise ? 1 : b.rise < a.rise ? -1 : String(a.value) < String(b.value) ? -1 : 1));
  return { rows: rows.slice(0, MOVERS_SHOWN), truncated };
}

/** Minute series of a window: one value per minute (0 where the API returned no row). */
function series(rows, w, metric) {
  const m = METRICS[metric];
  const at = new Map(rows.map((r) => [r.minute, r]));
  const out = [];
  for (let t = w.from; t < w.to; t += MINUTE) out.push(at.has(t) ? m.of(at.get(t)) : m.zero);
  return out;
}

function alertSlice(a) {
  const g = a.group || {};
  const by = g.by || a.subject.kind;
  const value = g.value ?? a.subject.id;
  if (by === "key") return { key: value };
  if (by === "model") return { model: value };
  if (String(by).startsWith("label.")) return { [by]: value };
  if (String(by).startsWith("tag")) return { tag: value };
  return {}; // a provider or a budget: the logs of the window, unfiltered
}

function alertWindow(a) {
  if (a.window_start && a.window_end) return [Date.parse(a.window_start), Date.parse(a.window_end) + 1];
  if (a.window_s) return [a.created_at_ms - a.window_s * 1000, a.created_at_ms + 1];
  return [a.created_at_ms - HOUR, a.created_at_ms + 1];
}

export default {
  title: "On call", icon: "◉",
  async render(main, ctx) {
    const p = ctx.params;
    const tz = zoneOf(p);
    const hours = HOURS.includes(Number(p.get("hours"))) ? Number(p.get("hours")) : 3;
    const days = DAYS.includes(Number(p.get("days"))) ? Number(p.get("days")) : 1;
    const metric = METRICS[p.get("metric")] ? p.get("metric") : "cost";
    const now = Date.now();
    const windows = windowsOf(hours, days, now);
    const [w0] = windows;
    const ask = (dims, minutes) => get("/v1/analytics/oncall", { from: w0.from, to: w0.to, days, tz,
      group_by: dims.join(","), limit: ROWS, minutes });
    // The minutes, tags, keys and models at once; the label's question waits for the label names
    // (the key list), so it is a second call, in parallel with the first.
    const early = ask(["tag_level.2", "key", "model"], true);
    const alertsDoc = get("/v1/alerts", { from: now - Math.max(hours, 24) * HOUR, limit: 50 });
    early.catch(() => null);
    alertsDoc.catch(() => null);
    const keys = await keyIndex();
    const names = labelNames(keys);
    const label = p.get("label") || (names.includes("team") ? "team" : names[0] || "team");
    const dims = DIMENSIONS(label);
    const labelDoc = ask([dims[2].name], false);
    labelDoc.catch(() => null);
    const answers = Promise.all([early, labelDoc]);

    const form = h("form", { class: "filters", "aria-label": "On-call view options" },
      field("Last", select({ name: "hours", id: "oc-hours" }, HOURS.map((n) => [String(n), `${n} hour${n > 1 ? "s" : ""}`]),
        String(hours))),
      field("Against", select({ name: "days", id: "oc-days" }, DAYS.map((n) => [String(n), n === 1 ? "the day before"
        : `the ${n} days before`]), String(days))),
      field("Measure", select({ name: "metric", id: "oc-metric" }, Object.entries(METRICS).map(([k, m]) => [k, m.label]), metric)),
      field("Label", select({ name: "label", id: "oc-label" }, names.map((n) => [n, n]), label)),
      zoneField(tz),
      h("div", { class: "field field-actions" }, h("button", { type: "submit", class: "primary" }, "Show"),
        h("a", { href: location.pathname + location.search, class: "button ghost", id: "oc-refresh" }, "Refresh")));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      ctx.apply(new URLSearchParams([...new FormData(form)].filter(([, v]) => v)));
    });
    const since = clock(w0.from, tz).slice(-8, -3);
    const span = `${since}–${clock(w0.to, tz).slice(-8, -3)} ${tz}`;
    main.append(pageHeader("On call", `The last ${hours} hour${hours > 1 ? "s" : ""} (${span}) minute by minute, against the `
      + `same hours of ${days === 1 ? "the day before" : `the ${days} days before`}: what rose, and which alerts fired.`), form);
    const body = h("div", { class: "oncall" });
    main.append(body);
    const [[first, second], alerts] = await loading(body, Promise.all([answers, alertsDoc]), "Reading the last hours");
    const minutes = first.minutes;
    const byDim = dims.map((d) => first.groups[d.name] || second.groups[d.name]);
    if (!ctx.isCurrent()) return;
    const withZone = Boolean(p.get("tz"));
    const m = METRICS[metric];

    // Totals of each window, from the minute counts (exact: spend in picodollars).
    const totals = minutes.map((rows) => ({
      requests: sum(rows.map((r) => r.requests), 0), errors: sum(rows.map((r) => r.errors), 0),
      cost: sum(rows.map((r) => toPico(r.cost)), 0n),
    }));
    const [t0, ...tb] = totals;
    const usualOf = (k) => mean(sum(tb.map((t) => t[k]), k === "cost" ? 0n : 0), days, k);
    const versus = (k) => h("span", { title: `usual: ${exactText(usualOf(k), k)}` },
      `usual ${meanText(usualOf(k), k)} · ${changeText(t0[k], usualOf(k), k)} (${ratioText(t0[k], usualOf(k))})`);
    const fired = alerts.data.filter((a) => a.created_at_ms >= w0.from);
    body.append(h("div", { class: "kpis" },
      card(`Spend since ${since}`, moneyText(picoText(t0.cost)), versus("cost")),
      card(`Requests since ${since}`, count(t0.requests), versus("requests")),
      card("Errors (status ≥ 400)", `${count(t0.errors)} · ${percent(t0.requests ? t0.errors / t0.requests : null)}`,
        versus("errors")),
      card(`Alerts since ${since}`, count(fired.length), `${count(alerts.data.length)} in the last ${Math.max(hours, 24)} hours`)));

    const canvas = h("canvas", { role: "img", "aria-label": `${m.label} per minute, now and on previous days` });
    body.append(panel(`${m.label} per minute (${tz}), now against the same hours before`,
      h("div", { class: "chart-box" }, canvas)));
    const labels = [];
    for (let t = w0.from; t < w0.to; t += MINUTE) labels.push(clock(t, tz).slice(-8, -3));
    const GREYS = ["#64748b", "#94a3b8", "#cbd5e1"];
    drawChart(canvas, {
      type: "line", labels, x: `Minute (${tz})`, y: `${m.label} (${m.unit})`,
      yTick: metric === "cost" ? (v) => `$${tick(v)}` : (v) => count(v),
      datasets: windows.map((w, i) => {
        const values = series(minutes[i], w, metric);
        return {
          label: i === 0 ? "Now" : i === 1 ? "1 day before" : `${i} days before`,
          data: values.map(Number).map((v) => (metric === "cost" ? v / 1e12 : v)),
          text: values.map((v) => m.text(v)),
          color: i === 0 ? "#2563eb" : GREYS[Math.min(i - 1, GREYS.length - 1)], width: i === 0 ? 2 : 1.5, order: i === 0 ? 0 : i,
        };
      }),
    });

    const moverTables = dims.map((d, i) => {
      const { rows, truncated } = movers(byDim[i], days, d.name, metric);
      return panel(`${d.title}: largest rises in ${m.label.toLowerCase()}`, [table([
        { label: d.label, value: (r) => h("a", { href: logsHref(d.filter(r.value), w0.from, w0.to, tz, withZone),
          class: "clip wide mover-link", title: `the logs of ${r.name} since ${since}`, dataset: { value: r.value } }, r.name) },
        { label: "Now", num: true, value: (r) => (metric === "cost" ? moneyText(picoText(r.now)) : count(r.now)) },
        { label: "Usual", num: true, value: (r) => h("span", { title: exactText(r.usual, metric) }, meanText(r.usual, metric)) },
        { label: "Rise", num: true, value: (r) => h("span", { class: "rise" }, changeText(r.now, r.usual, metric)) },
        { label: "%", num: true, value: (r) => h("span", { class: "rise" }, ratioText(r.now, r.usual)) },
      ], rows, { empty: `Nothing rose against the ${days === 1 ? "day" : `${days} days`} before.`, class: "data movers",
        rowClass: () => "mover", rowData: (r) => ({ now: exactText(r.now, metric), usual: exactText(r.usual, metric) }) }),
      truncated ? h("p", { class: "plan-note" }, `Values past the ${count(ROWS)} largest of the previous days are not compared.`) : null,
      ], null);
    });
    moverTables.forEach((el, i) => { el.dataset.dim = dims[i].name; });
    body.append(h("div", { class: "grid2 movers-grid" }, moverTables));

    body.append(panel(`Alerts fired in the last ${Math.max(hours, 24)} hours`, table([
      { label: `Time (${tz})`, value: (a) => clock(a.created_at_ms, tz) },
      { label: "Kind", value: (a) => h("span", { class: `badge ${a.kind === "threshold" ? "" : "danger"}` }, a.kind.replace(/_/g, " ")) },
      { label: "What", value: (a) => h("span", { class: "wrap" }, a.summary) },
      { label: "Logs", value: (a) => {
        const [from, to] = alertWindow(a);
        return h("a", { href: logsHref(alertSlice(a), from, to, tz, withZone), class: "alert-logs" }, "Logs");
      } },
    ], alerts.data, { empty: "No alert fired.", class: "data alerts", rowClass: () => "alert-row" }),
    alerts.has_more ? h("p", { class: "plan-note" }, "The 50 newest; GET /v1/alerts has the rest.") : null));
  },
};

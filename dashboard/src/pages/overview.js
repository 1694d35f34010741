// Overview: spend and requests over time, this month against last, top tags / label values /
// models, error rate and latency, and the keys and budgets nearest their limits.

import { get, usage } from "../api.js";
import { drawChart } from "../chart.js";
import { field, h, select } from "../dom.js";
import { bucketLabel, count, money, moneyNumber, ms, percent, plural, tick } from "../format.js";
import { filterBar, filtersOf, keyIndex, labelNames, monthIso } from "../filters.js";
import { card, loading, moneyText, pageHeader, panel, periodMeter, planNote, table } from "../ui.js";

function topList(title, doc, dim, hrefOf) {
  const rows = doc.data.slice(0, 6);
  const max = Math.max(...rows.map((r) => moneyNumber(r.cost)), 1e-12);
  return panel(title, table([
    { label: dim.label, value: (r) => {
      const v = r.group[dim.name];
      const text = v === null ? dim.none : String(dim.name === "key" ? r.key_name || v : v);
      return v === null ? h("span", { class: "muted" }, text)
        : h("a", { href: hrefOf(v), class: "clip", title: text }, text);
    } },
    { label: "Spend (USD)", num: true, value: (r) => h("div", { class: "spark" },
      h("div", { class: "spark-bar", style: `width:${((moneyNumber(r.cost) / max) * 100).toFixed(1)}%` }),
      moneyText(r.cost)) },
    { label: "Requests", num: true, value: (r) => count(r.requests) },
  ], rows, { empty: "No requests in this range." }),
  doc.overlapping ? h("span", { class: "badge", title: doc.note }, "rows overlap") : null);
}

export default {
  title: "Overview", icon: "▦", fallbackRange: "month",
  async render(main, ctx) {
    const f = filtersOf(ctx.params, "month");
    // The questions that need no key list start at once; the label one waits for the label names.
    const early = Promise.all([
      usage(f, [`time.${f.range.bucket}`]),
      usage({ ...f, from: monthIso(-1, f.tz), to: monthIso(1, f.tz) }, ["time.month"]),
      usage(f, ["tag_level.1"], { limit: 6 }),
      usage(f, ["model"], { limit: 6 }),
    ]);
    early.catch(() => null);
    const keys = await keyIndex();
    const names = labelNames(keys);
    const label = ctx.params.get("group") || (names.includes("team") ? "team" : names[0] || "team");
    const labelPick = field("Top label", select({ name: "group" }, names.map((n) => [n, n]), label));
    main.append(pageHeader("Overview", `Where the money goes, at a glance. Days and months are ${f.tz}'s.`),
      filterBar(ctx.params, ctx.apply, { keys, fallback: "month", extra: [labelPick] }));
    const body = h("div", { class: "overview" });
    main.append(body);
    const explore = (params) => `/dashboard/explore?${new URLSearchParams({ ...params,
      ...Object.fromEntries(["range", "from", "to", "tz"].filter((k) => ctx.params.get(k)).map((k) => [k, ctx.params.get(k)])) })}`;
    // The budget engine's API, when this gateway serves it (the session says so).
    const budgets = ctx.features.budgets ? get("/v1/manage/budget") : Promise.resolve(null);
    const [[series, months, tags, models], labels] = await loading(body, Promise.all([
      early, usage(f, [`label.${label}`], { limit: 6 })]), "Loading the overview");
    if (!ctx.isCurrent()) return;
    const t = series.totals;
    const [last, current] = [monthIso(-1, f.tz).slice(0, 7), monthIso(0, f.tz).slice(0, 7)]
      .map((m) => months.data.find((r) => r.group["time.month"] === m) || { cost: "0", requests: 0 });
    body.append(h("div", { class: "kpis" },
      card("Spend in range", moneyText(t.cost), `${count(t.requests)} requests`),
      card("This month so far", moneyText(current.cost), h("span", { id: "last-month" },
        `last month: ${money(last.cost)} (${count(last.requests)} requests)`)),
      card("Error rate", percent(t.error_rate), `${plural(t.errors, "error")} (status ≥ 400)`),
      card("Latency p50 / p95", `${ms(t.latency_ms.p50)} / ${ms(t.latency_ms.p95)}`, `p99 ${ms(t.latency_ms.p99)}`)));

    const canvas = h("canvas", { "aria-label": "Spend and requests over time", role: "img" });
    const unit = f.range.bucket;
    body.append(panel(`Spend and requests per ${unit} (${series.plan.timezone})`, h("div", { class: "chart-box" }, canvas),
      planNote(series)));
    drawChart(canvas, {
      labels: series.data.map((r) => bucketLabel(r.group[`time.${unit}`], unit)),
      x: `${unit === "hour" ? "Hour" : unit === "day" ? "Day" : "Month"} (${series.plan.timezone})`,
      y: "Spend (USD)", yTick: (v) => `$${tick(v)}`, y2: "Requests", y2Tick: (v) => count(v),
      datasets: [
        { label: "Spend (USD)", data: series.data.map((r) => moneyNumber(r.cost)), text: series.data.map((r) => money(r.cost)) },
        { label: "Requests", data: series.data.map((r) => r.requests), axis: "y2",
          text: series.data.map((r) => count(r.requests)) },
      ],
    });
    const tagDim = { name: "tag_level.1", label: "Tag (top level)", none: "(untagged)" };
    const labelDim = { name: `label.${label}`, label: `Label ${label}`, none: "(no label)" };
    const modelDim = { name: "model", label: "Model", none: "—" };
    body.append(h("div", { class: "grid3" },
      topList("Top tags", tags, tagDim, (v) => explore({ group: "tag_level.2", tag: v })),
      topList(`Top ${label} values`, labels, labelDim, (v) => explore({ group: "model", [`label.${label}`]: v })),
      topList("Top models", models, modelDim, (v) => explore({ group: "key", model: v }))));

    const limited = keys.filter((k) => k.monthly_limit !== null && !k.revoked_at)
      .map((k) => ({ ...k, ratio: Number(k.monthly_spend) / Number(k.monthly_limit) }))
      .sort((a, b) => b.ratio - a.ratio).slice(0, 6);
    const limits = panel("Keys nearest their limits", table([
      { label: "Key", value: (k) => h("a", { href: "/dashboard/keys", class: "long" }, k.name) },
      { label: "Spend against limit", value: (k) => periodMeter(k.monthly_spend, k.monthly_limit, k.period) },
    ], limited, { empty: "No key has a monthly limit." }));
    const budgetDoc = await budgets;
    body.append(h("div", { class: "grid2" }, limits, budgetDoc && Array.isArray(budgetDoc.data)
      ? panel("Budgets nearest their limits", table([
        { label: "Budget", value: (b) => h("span", { dataset: { budget: b.id } }, b.name || b.id) },
        { label: "Spend against limit", value: (b) => periodMeter(b.monthly_spend ?? "0", b.monthly_limit, b.period) },
      ], budgetDoc.data.map((b) => ({ ...b, ratio: Number(b.monthly_spend ?? 0) / Number(b.monthly_limit) }))
        .sort((a, b) => b.ratio - a.ratio).slice(0, 6), { empty: "No budget yet." })) : null));
  },
};

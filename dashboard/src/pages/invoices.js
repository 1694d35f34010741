// Invoices: a month, a group (e.g. label.customer_id) and a markup; the lines and the total due
// from the export API, and its CSV (the very same API with format=csv).

import { get, query, usage } from "../api.js";
import { field, h, select } from "../dom.js";
import { count, money } from "../format.js";
import { keyIndex, labelNames, monthIso, zoneField, zoneOf } from "../filters.js";
import { loading, moneyText, pageHeader, panel, table } from "../ui.js";

/** The months (YYYY-MM, local to tz) of the last two years that had requests, newest first. */
async function monthsWithData(tz) {
  const doc = await usage({ from: monthIso(-23, tz), to: monthIso(1, tz), tz }, ["time.month"], { limit: 24 });
  return doc.data.filter((r) => r.requests > 0).map((r) => r.group["time.month"]).sort().reverse();
}

/** The latest whole month with requests; the month in progress when it is the only one; else last month. */
function defaultMonth(withData, tz) {
  const current = monthIso(0, tz).slice(0, 7);
  return withData.find((m) => m < current) || withData.find((m) => m === current) || monthIso(-1, tz).slice(0, 7);
}

export default {
  title: "Invoices", icon: "▤",
  async render(main, ctx) {
    const p = ctx.params;
    const tz = zoneOf(p);
    const [keys, withData] = await Promise.all([keyIndex(), p.get("month") ? null : monthsWithData(tz)]);
    const month = p.get("month") || defaultMonth(withData, tz);
    const names = labelNames(keys);
    const fallback = names.includes("customer_id") ? "label.customer_id" : "key";
    const group = p.get("group") || fallback;
    const markup = p.get("markup") || "0";
    const groups = [["key", "API key"], ["model", "Model (requested)"], ["served_model", "Served model"],
      ["provider", "Provider"], ...names.map((n) => [`label.${n}`, `Label: ${n}`])];
    const form = h("form", { class: "filters", "aria-label": "Invoice options" },
      field(`Month (${tz})`, h("input", { type: "month", name: "month", value: month, required: true })),
      field("One line per", select({ name: "group", id: "inv-group" }, groups, group)),
      field("Markup rate", h("input", { name: "markup", value: markup, inputmode: "decimal", size: 6 }), "0.20 adds 20 %"),
      zoneField(tz),
      h("div", { class: "field field-actions" }, h("button", { type: "submit", class: "primary" }, "Show")));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      ctx.apply(new URLSearchParams([...new FormData(form)].filter(([, v]) => v)));
    });
    const params = { month, group_by: group, markup, tz };
    const csvHref = `/v1/analytics/export?${query({ ...params, format: "csv" })}`;
    main.append(pageHeader("Invoices", "A month's invoice lines per group, with your markup. Cents are allotted so the "
      + "lines add up to the total due exactly.", h("a", { class: "button", href: csvHref, download: `tallygate-${month}.csv`,
      id: "invoice-csv" }, "Download CSV")), form);
    const body = h("div");
    main.append(body);
    const doc = await loading(body, get("/v1/analytics/export", params), "Building the invoice");
    if (!ctx.isCurrent()) return;
    const dims = doc.group_by || [];
    const t = doc.total || doc.totals || {};
    body.append(h("div", { class: "kpis" },
      h("section", { class: "card kpi" }, h("h2", { class: "kpi-label" }, "Total due"),
        h("div", { class: "kpi-value", id: "total-due" }, money(t.amount_due)),
        h("div", { class: "kpi-sub" }, `cost ${money(t.cost)} + markup ${money(t.markup)}`)),
      h("section", { class: "card kpi" }, h("h2", { class: "kpi-label" }, "Lines"),
        h("div", { class: "kpi-value" }, count((doc.lines || []).length)),
        h("div", { class: "kpi-sub" }, `${count(t.requests)} requests in ${month} (${doc.timezone || tz})`))),
    panel(`Invoice ${month}`, table([
      ...dims.map((d) => ({ label: (groups.find(([v]) => v === d) || [d, d])[1], value: (l) => {
        const v = (l.group || {})[d];
        return v === null || v === undefined ? h("span", { class: "muted" }, "(none)") : String(v);
      } })),
      { label: "Requests", num: true, value: (l) => count(l.requests), total: () => count(t.requests) },
      { label: "Cost (USD, exact)", num: true, value: (l) => moneyText(l.cost), total: () => moneyText(t.cost) },
      { label: "Markup (USD)", num: true, value: (l) => moneyText(l.markup), total: () => moneyText(t.markup) },
      { label: "Amount due (USD)", num: true, value: (l) => h("strong", {}, money(l.amount_due)),
        total: () => h("strong", {}, money(t.amount_due)) },
    ], doc.lines || [], { totals: t, empty: "No requests that month." })));
  },
};

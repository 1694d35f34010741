// Pieces the pages share: page header, cards, tables, the "still working" notice, meters.

import { ApiError } from "./api.js";
import { clear, h } from "./dom.js";
import { money, moneyParts } from "./format.js";

export function pageHeader(title, subtitle, ...actions) {
  return h("header", { class: "page-header" },
    h("div", {}, h("h1", {}, title), subtitle ? h("p", { class: "muted" }, subtitle) : null),
    actions.length ? h("div", { class: "page-actions" }, actions) : null);
}

/**
 * Await `promise` while `el` shows a placeholder; after 1.5 s the placeholder says the question is slow
 * (it reads the raw ledger for ranges the roll-ups do not hold) instead of spinning silently. A question
 * the API refuses (a 400: say, tags crossed with models over more records than the raw budget) puts the
 * API's own reason in `el`, where the figures would have been.
 */
export async function loading(el, promise, what = "Loading") {
  const note = h("div", { class: "loading", role: "status" }, `${what}…`);
  clear(el, note);
  const timer = setTimeout(() => {
    note.textContent = `${what}: this question is slow on this ledger (part of it is read from the raw `
      + "records, not the roll-ups). Shorter or whole-day ranges answer faster.";
    note.classList.add("slow");
  }, 1500);
  try {
    return await promise;
  } catch (err) {
    if (err instanceof ApiError && err.status === 400) {
      el.append(h("div", { class: "error refused", role: "alert" },
        h("strong", {}, "The API refused this question. "), err.message));
      err.shown = true;
    }
    throw err;
  } finally {
    clearTimeout(timer);
    note.remove();
  }
}

/** Money as text: from a dollar up, cents in full weight and the exact tail after them lighter. */
export function moneyText(text) {
  if (Math.abs(Number(text)) < 1) return h("span", { class: "money" }, money(text));
  const { head, tail } = moneyParts(text);
  return h("span", { class: "money", title: money(text) }, head, tail ? h("span", { class: "money-tail" }, tail) : null);
}

export function card(label, value, sub) {
  return h("section", { class: "card kpi" }, h("h2", { class: "kpi-label" }, label),
    h("div", { class: "kpi-value" }, value), sub ? h("div", { class: "kpi-sub" }, sub) : null);
}

export function panel(title, body, extra) {
  return h("section", { class: "card panel" },
    h("div", { class: "panel-head" }, h("h2", {}, title), extra || null), body);
}

/**
 * A table: columns [{label, value(row) -> node|text, num?: bool}], optional footer row (totals);
 * `opts.rowData(row)` sets data- attributes of a row.
 */
export function table(columns, rows, opts = {}) {
  const head = h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : null }, c.label)));
  const body = rows.map((row, i) => h("tr", { class: opts.rowClass ? opts.rowClass(row, i) : null,
    dataset: opts.rowData ? opts.rowData(row) : null },
    columns.map((c) => h("td", { class: c.num ? "num" : null }, c.value(row, i)))));
  const foot = opts.totals
    ? h("tfoot", {}, h("tr", {}, columns.map((c, i) => h(i === 0 ? "th" : "td",
      { class: c.num ? "num" : null, scope: i === 0 ? "row" : null }, c.total ? c.total(opts.totals) : i === 0 ? "Total" : ""))))
    : null;
  return h("div", { class: "table-wrap" }, h("table", { class: opts.class || "data" },
    opts.caption ? h("caption", {}, opts.caption) : null, h("thead", {}, head), h("tbody", {}, body), foot),
  rows.length ? null : h("p", { class: "empty" }, opts.empty || "Nothing in this range."));
}

/** A spend-against-limit bar; `ratio` null means no limit. */
/** The window a limit's spend is counted in (calendar ones in the reporting time zone):
 * "this month", "today", "this week", "last 24 h". */
export function periodText(period) {
  if (!period || period === "month") return "this month";
  if (period === "day") return "today";
  if (period === "week") return "this week";
  return period.hours ? `last ${period.hours} h` : `last ${period.days} d`;
}

/** A spend meter (see `meter`) that names the window of a limit's period under it. */
export function periodMeter(spent, limit, period) {
  return h("div", {}, meter(spent, limit), h("div", { class: "muted period" }, periodText(period)));
}

export function meter(spent, limit) {
  if (limit === null || limit === undefined) return h("span", { class: "muted" }, `${money(spent)} · no limit`);
  const ratio = Number(limit) > 0 ? Number(spent) / Number(limit) : 1;
  const pct = Math.min(100, ratio * 100);
  const level = ratio >= 0.9 ? "high" : ratio >= 0.7 ? "mid" : "low";
  return h("div", { class: "meter-wrap" },
    h("div", { class: `meter ${level}`, role: "meter", "aria-valuemin": "0", "aria-valuemax": "100",
      "aria-valuenow": pct.toFixed(0), "aria-label": "share of the limit spent" },
    h("div", { class: "meter-fill", style: `width:${pct.toFixed(1)}%` })),
    h("span", { class: "meter-text" }, `${money(spent)} of ${money(limit)} (${(ratio * 100).toFixed(1)} %)`));
}

/** A note under a figure saying how the API answered (roll-ups or raw ledger, percentile kind). */
export function planNote(doc) {
  if (!doc || !doc.plan) return null;
  const p = doc.plan;
  const exact = p.percentiles === "exact";
  return h("p", { class: "plan-note" }, `Answered from ${p.source === "raw" ? "the raw ledger" : `${p.source} roll-ups`}`
    + `; percentiles ${exact ? "exact" : `from histograms (within ${(p.percentile_max_relative_error * 100).toFixed(1)} %)`}`
    + `; hours, days and months in ${p.timezone || "UTC"}.`);
}

// The filters every page shares, kept in the URL: range (or from/to), tag, label.<name>, key, model,
// and tz, the reporting time zone (default: the gateway's `reporting.timezone`, from the session).
// In a zone other than UTC, ranges are sent as local wall-clock times without an offset and the
// API reads them in `tz`, so "this month" and every day bucket start at local midnight.

import { get } from "./api.js";
import { field, h, select } from "./dom.js";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
export const RANGES = [
  ["24h", "Last 24 hours"], ["7d", "Last 7 days"], ["30d", "Last 30 days"],
  ["month", "This month"], ["last-month", "Last month"], ["custom", "Custom"],
];

const isoDate = (ms) => new Date(ms).toISOString().slice(0, 10);
const isoMinute = (ms) => new Date(ms).toISOString().slice(0, 16);

/** The range picker's options: the presets, plus the URL's own (say "3h") when it is another. */
export function rangeOptions(preset) {
  return PRESET_NAMES.has(preset) ? RANGES : [...RANGES.slice(0, -1), [preset, presetName(preset)], RANGES.at(-1)];
}

let defaultZone = "UTC";
export const setDefaultZone = (tz) => { defaultZone = tz || "UTC"; };
export const zoneOf = (params) => params.get("tz") || defaultZone;

const wallParts = new Map();
/** How far the wall clock of `tz` is ahead of UTC at `ms` (0 for UTC or an unknown zone, which the API refuses). */
export function offsetMs(ms, tz) {
  if (tz === "UTC") return 0;
  try {
    if (!wallParts.has(tz)) {
      wallParts.set(tz, new Intl.DateTimeFormat("en-US", { timeZone: tz, hourCycle: "h23", year: "numeric",
        month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" }));
    }
    const parts = Object.fromEntries(wallParts.get(tz).formatToParts(new Date(ms)).map((p) => [p.type, p.value]));
    const wall = Date.UTC(+parts.year, +parts.month - 1, +parts.day, +parts.hour, +parts.minute, +parts.second);
    return wall - Math.floor(ms / 1000) * 1000;
  } catch {
    return 0;
  }
}

/** A wall-clock time (ms as if UTC) as the API takes it: ISO with Z in UTC, without an offset elsewhere. */
export const wallIso = (ms, tz) => {
  const text = new Date(ms).toISOString().replace(".000Z", "Z");
  return tz === "UTC" ? text : text.replace("Z", "");
};

/** "YYYY-MM-DD" of the first day of the month `offset` months from now, in `tz`. */
export function monthIso(offset, tz, now = Date.now()) {
  return new Date(monthStart(now + offsetMs(now, tz), offset)).toISOString().slice(0, 10);
}

function monthStart(ms, offset = 0) {
  const d = new Date(ms);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + offset, 1);
}

const PRESET_NAMES = new Map(RANGES);
const SPAN = /^([1-9]\d{0,3})([hd])$/; // "3h", "90d": the last N hours (to the next hour) or days (to tomorrow)

/** A range preset's name, or null when it is not one: "Last 7 days", "Last 3 hours". */
export function presetName(preset) {
  if (PRESET_NAMES.has(preset)) return PRESET_NAMES.get(preset);
  const m = SPAN.exec(preset || "");
  return m ? `Last ${m[1]} ${m[2] === "h" ? "hour" : "day"}${m[1] === "1" ? "" : "s"}` : null;
}

/**
 * A from/to parameter as a wall-clock time of `tz` (ms as if UTC), or NaN: a date, a date-time
 * without an offset (already wall clock), one with Z or an offset, or epoch milliseconds.
 */
export function parseWall(text, tz) {
  if (/^\d{1,15}$/.test(text)) return +text + offsetMs(+text, tz);
  if (/^\d{4}-\d{2}-\d{2}$/.test(text)) return Date.parse(`${text}T00:00:00Z`);
  if (/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?$/.test(text)) return Date.parse(`${text}Z`);
  if (/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?(Z|[+-]\d{2}:\d{2})$/.test(text)) {
    const abs = Date.parse(text);
    return Number.isNaN(abs) ? NaN : abs + offsetMs(abs, tz);
  }
  return NaN;
}

/**
 * The time range of URL params: {from, to} (ISO, `to` exclusive), the preset, and the chart bucket.
 * A range the URL names but this dashboard cannot read is never swapped silently for another:
 * `error` says what was wrong and which range is shown instead (main.js puts it on the page).
 */
export function rangeOf(params, fallback = "month", when = Date.now()) {
  const tz = zoneOf(params);
  const now = when + offsetMs(when, tz); // the wall clock of tz, as if it were UTC
  const asked = params.get("range");
  let preset = asked || (params.get("from") || params.get("to") ? "custom" : fallback);
  let error = null;
  if (preset !== "custom" && !presetName(preset)) {
    error = `The URL asks for range=${asked}, which is not a range this dashboard knows (24h, 7d, 30d, month, `
      + `last-month, custom with from and to, or any Nh or Nd such as 3h or 90d): showing ${presetName(fallback)} instead.`;
    preset = fallback;
  }
  let from, to;
  const nextHour = Math.floor(now / HOUR) * HOUR + HOUR;
  const tomorrow = Math.floor(now / DAY) * DAY + DAY;
  const span = SPAN.exec(preset);
  if (preset === "month") [from, to] = [monthStart(now), monthStart(now, 1)];
  else if (preset === "last-month") [from, to] = [monthStart(now, -1), monthStart(now)];
  else if (span && span[2] === "h") [from, to] = [nextHour - span[1] * HOUR, nextHour];
  else if (span) [from, to] = [tomorrow - span[1] * DAY, tomorrow];
  else {
    from = params.get("from") ? parseWall(params.get("from"), tz) : tomorrow - 30 * DAY;
    to = params.get("to") ? parseWall(params.get("to"), tz) : tomorrow;
    const bad = Number.isNaN(from) ? "from" : Number.isNaN(to) ? "to" : from >= to ? "to" : null;
    if (bad) {
      error = Number.isNaN(from) || Number.isNaN(to)
        ? `The URL's ${bad}=${params.get(bad)} is not a date (YYYY-MM-DD), a date-time or epoch milliseconds: `
        : `The URL's range ends (to=${params.get("to")}) before it starts (from=${params.get("from")}): `;
      error += `showing ${presetName(fallback)} instead.`;
      return { ...rangeOf(new URLSearchParams({ range: fallback, tz }), fallback, when), error };
    }
  }
  const length = to - from;
  const bucket = length <= 3 * DAY ? "hour" : length <= 120 * DAY ? "day" : "month";
  return { preset, from: wallIso(from, tz), to: wallIso(to, tz), fromMs: from, toMs: to, bucket, tz, error,
    precise: from % DAY !== 0 || to % DAY !== 0 };
}

/** Label filters from `label.<name>` params. */
export function labelsOf(params) {
  const labels = {};
  for (const [k, v] of params) if (k.startsWith("label.") && v) labels[k.slice(6)] = v;
  return labels;
}

/** The filter object the API helpers take. */
export function filtersOf(params, fallback) {
  const range = rangeOf(params, fallback);
  return {
    range, from: range.from, to: range.to, tz: range.tz, labels: labelsOf(params),
    tag: params.get("tag") || "", key: params.get("key") || "", model: params.get("model") || "",
  };
}

let keysCache = null;

/** Every key record (first 500), fetched once a minute at most: names, labels and limits. */
export async function keyIndex(fresh = false) {
  if (fresh || !keysCache || Date.now() - keysCache.at > 60_000) {
    const page = await get("/v1/manage/apikey", { limit: 500 });
    keysCache = { at: Date.now(), keys: page.data };
  }
  return keysCache.keys;
}

export function labelNames(keys) {
  const names = new Set();
  for (const k of keys) for (const n of Object.keys(k.labels || {})) names.add(n);
  return [...names].sort();
}

/**
 * The filter bar: a form whose submit writes the URL (through `apply(params)`).
 * `opts.keys` fills the key picker; `opts.extra` adds page-specific fields before the button.
 */
export function filterBar(params, apply, opts = {}) {
  const f = filtersOf(params, opts.fallback);
  const labels = Object.entries(f.labels).map(([k, v]) => `${k}=${v}`).join(", ");
  const keys = opts.keys || [];
  const form = h("form", { class: "filters", role: "search", "aria-label": "Filters" });
  const rangeSel = select({ name: "range", id: "f-range" }, rangeOptions(f.range.preset), f.range.preset);
  // Whole days as dates ("to" inclusive); a range with a time of day (a drill-down) to the minute.
  const precise = f.range.precise;
  const fromIn = h("input", { type: precise ? "datetime-local" : "date", name: "from", id: "f-from",
    value: precise ? isoMinute(f.range.fromMs) : isoDate(f.range.fromMs) });
  const toIn = h("input", { type: precise ? "datetime-local" : "date", name: "to", id: "f-to",
    value: precise ? isoMinute(f.range.toMs) : isoDate(f.range.toMs - 1) });
  const syncCustom = () => {
    const custom = rangeSel.value === "custom";
    fromIn.disabled = toIn.disabled = !custom;
  };
  rangeSel.addEventListener("change", syncCustom);
  syncCustom();
  form.append(
    field(`Range (${f.tz})`, rangeSel),
    field("From", fromIn),
    field(precise ? "To" : "To (incl.)", toIn),
    field("Tag subtree", h("input", { name: "tag", value: f.tag, placeholder: "e.g. team/search", size: 16 })),
    field("Labels", h("input", { name: "labels", value: labels, placeholder: "team=growth, env=prod", size: 18 })),
    field("Key", select({ name: "key" }, [["", "All keys"], ...keys.map((k) => [k.id, k.name])], f.key)),
    field("Model", h("input", { name: "model", value: f.model, placeholder: "requested model", size: 12 })),
    zoneField(f.tz),
    ...(opts.extra || []),
    h("div", { class: "field field-actions" }, h("button", { type: "submit", class: "primary" }, "Apply"),
      h("a", { href: opts.resetHref || location.pathname, class: "button ghost" }, "Reset")),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const data = new FormData(form);
    const next = new URLSearchParams();
    for (const [name, value] of data) {
      if (name === "labels" || name === "from" || name === "to" || !value) continue;
      if (name === "tz" && value === defaultZone) continue; // the gateway's own zone needs no parameter
      next.set(name, value);
    }
    if (rangeSel.value === "custom") {
      next.set("from", fromIn.value);
      next.set("to", precise ? toIn.value : isoDate(Date.parse(toIn.value) + DAY));
    }
    for (const pair of String(data.get("labels") || "").split(",")) {
      const [k, ...rest] = pair.split("=");
      if (k.trim() && rest.length) next.set(`label.${k.trim()}`, rest.join("=").trim());
    }
    apply(next);
  });
  return form;
}

/** The time zone picker: any IANA name (the browser's list as suggestions); the API checks it. */
export function zoneField(tz) {
  const zones = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [];
  const list = h("datalist", { id: "tz-list" }, ["UTC", ...zones.filter((z) => z !== "UTC")].map((z) => h("option", { value: z })));
  return field("Time zone", [h("input", { name: "tz", id: "f-tz", value: tz, list: "tz-list", size: 14,
    autocomplete: "off", spellcheck: "false" }), list]);
}

// The Keys page's rate-limit columns: the limits on every request of a key (its key and label
// limits) with what each counts in its window now, and the key's refusals in the last hour.
// One call for the whole page (GET /v1/manage/ratelimit/usage?key=…), never one per key.

import { get } from "../api.js";
import { h } from "../dom.js";
import { count } from "../format.js";

/** The usage document for the keys of a page, or null when the API does not answer it. */
export async function keyLimits(keys) {
  if (!keys.length) return null;
  try {
    return await get("/v1/manage/ratelimit/usage", { key: keys.map((k) => k.id) });
  } catch {
    return null;
  }
}

/** Rows by key id: { limits: [limit with usage], refusals }. */
export function byKey(doc) {
  const out = new Map();
  if (!doc) return out;
  const limits = new Map(doc.limits.map((l) => [l.id, l]));
  for (const k of doc.keys) {
    out.set(k.id, { limits: k.rate_limits.map((id) => limits.get(id)).filter(Boolean), refusals: k.refusals_last_hour });
  }
  return out;
}

function gauge(kind, what, used, limit) {
  const ratio = limit > 0 ? used / limit : 1;
  const level = ratio >= 0.9 ? "high" : ratio >= 0.7 ? "mid" : "low";
  return h("div", { class: "rl-line", dataset: { kind } },
    h("span", { class: `rl-dot ${level}`, "aria-hidden": "true" }),
    h("span", { class: "rl-figure" }, `${count(used)} / ${count(limit)}`), " ", h("span", { class: "muted" }, what));
}

/** One limit: its name (shared by a label group or the key's own) and a line per limit it sets. */
function limitBlock(l) {
  const shared = l.scope.label ? `shared: ${Object.entries(l.scope.label).map(([k, v]) => `${k}=${v}`).join(", ")}` : "this key";
  return h("div", { class: "rl", dataset: { ratelimit: l.id } },
    h("div", { class: "rl-name" }, h("span", { class: "strong" }, l.name), " ", h("span", { class: "chip" }, shared)),
    l.requests_per_second !== null ? gauge("rps", "requests / s", l.usage.requests_last_second, l.requests_per_second) : null,
    l.requests_per_minute !== null ? gauge("rpm", "requests / min", l.usage.requests, l.requests_per_minute) : null,
    l.tokens_per_minute !== null ? gauge("tpm", "tokens / min", l.usage.tokens, l.tokens_per_minute) : null,
    l.max_concurrent !== null ? gauge("concurrent", "in flight", l.usage.in_flight, l.max_concurrent) : null);
}

/** The cell of a key's rate limits (— for none, a note when the figures are unavailable). */
export function limitsCell(entry) {
  if (!entry) return h("span", { class: "muted" }, "unavailable");
  if (!entry.limits.length) return h("span", { class: "muted" }, "none");
  return h("div", { class: "rl-list" }, entry.limits.map(limitBlock));
}

/** The cell of a key's refusals in the last hour: 402 (budget) and 429 (rate limit). */
export function refusalsCell(entry) {
  if (!entry) return h("span", { class: "muted" }, "—");
  const r = entry.refusals;
  const total = r.budget_exceeded + r.rate_limit_exceeded;
  if (!total) return h("span", { class: "muted refusals", dataset: { total: "0" } }, "none");
  return h("div", { class: "refusals", dataset: { total: String(total) } },
    r.budget_exceeded ? h("div", { dataset: { code: "402" } }, `${count(r.budget_exceeded)} × 402 budget`) : null,
    r.rate_limit_exceeded ? h("div", { dataset: { code: "429" } }, `${count(r.rate_limit_exceeded)} × 429 rate limit`) : null);
}

/** The sentence under the table: which window and whose admissions the figures are. */
export function usageNote(doc) {
  if (!doc) return null;
  const whose = doc.counted_by === "redis" ? "every gateway process (shared through Redis)"
    : "this gateway process alone (no shared Redis, or it is unreachable)";
  return h("p", { class: "plan-note", id: "rate-usage-note" }, `Rate limits: requests and tokens in the last `
    + `${doc.window_s} s (per-second limits: the last second) and requests in flight now, counted by ${whose}; label limits are shared by every key `
    + "of the group; tag and model limits apply per request and are not listed here. Refusals: the last hour.");
}

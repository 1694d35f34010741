// Logs: the activity log with the shared filters (plus status), newest first, cursor pages, and
// a detail view of one record (tags, labels as recorded, usage, cost, pricing source, attempts,
// feedback). The open record and the page's cursor are in the URL.

import { get } from "../api.js";
import { clear, field, h } from "../dom.js";
import { clock, count, ms, when } from "../format.js";
import { filterBar, filtersOf, keyIndex } from "../filters.js";
import { filterParams } from "../api.js";
import { loading, moneyText, pageHeader, panel, table } from "../ui.js";

const statusBadge = (s) => h("span", { class: `badge ${s >= 400 ? "danger" : "ok"}` }, String(s));

function detail(rec) {
  const kv = (pairs) => h("dl", { class: "kv" }, pairs.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "—")]));
  return h("div", { class: "stack", id: "log-detail" },
    kv([
      ["Request id", h("code", {}, rec.id)], ["Time", when(rec.created_at)], ["Status", statusBadge(rec.status)],
      ["Error", rec.error ? `${rec.error.code || ""} ${rec.error.message || ""}`.trim() : null],
      ["Key", rec.key.name ? `${rec.key.name} (${rec.key.id})` : rec.key.id],
      ["Endpoint", rec.endpoint], ["Requested model", rec.requested_model], ["Served model", rec.served_model],
      ["Provider", rec.provider], ["Stream", rec.stream ? `yes${rec.partial ? " (partial)" : ""}` : "no"],
      ["Cost (USD)", moneyText(rec.cost)], ["Pricing source", rec.pricing_source],
      ["Latency", ms(rec.latency_ms)], ["Time to first token", rec.ttft_ms === null ? null : ms(rec.ttft_ms)],
    ]),
    h("h3", {}, "Tags"),
    rec.tags && rec.tags.length ? h("div", { class: "chips" }, rec.tags.map((t) => h("a", { class: "chip",
      href: `/dashboard/logs?tag=${encodeURIComponent(t)}` }, t))) : h("p", { class: "muted" }, "untagged"),
    h("h3", {}, "Labels as recorded"),
    Object.keys(rec.labels || {}).length ? h("div", { class: "chips" },
      Object.entries(rec.labels).map(([k, v]) => h("span", { class: "chip" }, `${k}=${v}`))) : h("p", { class: "muted" }, "none"),
    h("h3", {}, "Usage (tokens)"),
    kv(Object.entries(rec.usage).map(([k, v]) => [k.replace(/_/g, " "), count(v)])),
    h("h3", {}, `Attempts (${(rec.attempts || []).length})`),
    rec.attempts && rec.attempts.length ? h("ol", { class: "attempts" }, rec.attempts.map((a) => h("li", { class: "attempt" },
      h("div", { class: "attempt-head" }, a.status ? statusBadge(a.status) : h("span", { class: "badge" }, "no answer"),
        h("strong", {}, a.provider), h("span", {}, a.model), h("span", { class: "muted" }, ms(a.latency_ms))),
      a.target ? h("div", { class: "muted" }, `target ${a.target}`) : null,
      a.error ? h("div", { class: "attempt-error" }, a.error) : null)))
      : h("p", { class: "muted" }, "No upstream attempt (refused before routing)."),
    h("h3", {}, "Feedback"),
    rec.feedback ? kv([["Score", String(rec.feedback.score)], ["Comment", rec.feedback.comment],
      ["Updated", when(rec.feedback.updated_at)]]) : h("p", { class: "muted" }, "none"));
}

export default {
  title: "Logs", icon: "☰", fallbackRange: "7d",
  async render(main, ctx) {
    const p = ctx.params;
    const keys = await keyIndex();
    const extra = [field("Status", h("input", { name: "status", value: p.get("status") || "", inputmode: "numeric",
      placeholder: "e.g. 429", size: 5 }))];
    main.append(pageHeader("Logs", "Every request the gateway answered, newest first."),
      filterBar(p, ctx.apply, { keys, fallback: "7d", extra }));
    const layout = h("div", { class: p.get("id") ? "logs-layout with-detail" : "logs-layout" });
    const list = h("div");
    const side = h("aside", { class: "card detail-pane", "aria-label": "Request detail" });
    layout.append(list, side);
    main.append(layout);
    const f = filtersOf(p, "7d");
    const open = p.get("id");
    const params = { ...filterParams(f), status: p.get("status"), cursor: p.get("cursor"), limit: 50 };
    const [page, rec] = await loading(list, Promise.all([get("/v1/logs", params),
      open ? get(`/v1/logs/${encodeURIComponent(open)}`) : null]), "Reading the log");
    if (!ctx.isCurrent()) return;
    const hrefWith = (changes) => {
      const next = new URLSearchParams(p);
      for (const [k, v] of Object.entries(changes)) if (v) next.set(k, v); else next.delete(k);
      return `/dashboard/logs?${next}`;
    };
    list.append(panel(`Requests${p.get("cursor") ? " (older page)" : ""}`, [
      table([
        { label: `Time (${f.tz})`, value: (r) => h("a", { href: hrefWith({ id: r.id }), class: "log-link",
          "aria-current": r.id === open ? "true" : null }, clock(r.created_at, f.tz)) },
        { label: "Status", value: (r) => statusBadge(r.status) },
        { label: "Key", value: (r) => h("span", { class: "clip wide", title: r.key.name || r.key.id }, r.key.name || r.key.id) },
        { label: "Model", value: (r) => h("span", { class: "clip wide", title: r.requested_model }, r.requested_model) },
        { label: "Tags", value: (r) => h("span", { class: "tags-cell", title: (r.tags || []).join(", ") }, (r.tags || []).join(", ")),
          wide: true },
        { label: "Tokens in / out", num: true, value: (r) => `${count(r.usage.input_tokens)} / ${count(r.usage.output_tokens)}`,
          wide: true },
        { label: "Cost (USD)", num: true, value: (r) => moneyText(r.cost) },
        { label: "Latency", num: true, value: (r) => ms(r.latency_ms), wide: true },
      ].filter((c) => !open || !c.wide), page.data, { rowClass: (r) => (r.id === open ? "selected" : null), empty: "No request matches." }),
      h("div", { class: "pager" },
        p.get("cursor") ? h("a", { class: "button ghost", href: hrefWith({ cursor: null, id: null }) }, "← Newest") : null,
        page.next_cursor ? h("a", { class: "button ghost", id: "logs-next", href: hrefWith({ cursor: page.next_cursor, id: null }) },
          "Older →") : null)]));
    if (rec) {
      clear(side, h("div", { class: "panel-head" }, h("h2", {}, "Request"),
        h("a", { href: hrefWith({ id: null }), class: "button ghost small", "aria-label": "Close the detail" }, "Close")), detail(rec));
    } else {
      side.remove();
    }
  },
};

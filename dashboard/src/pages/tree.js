// Tag tree: expands level by level (one API call per expanded node), roll-up figures at every
// node (each request once per node), from any root; a node links to Explore and Logs filtered
// to its subtree.

import { get } from "../api.js";
import { clear, field, h, select } from "../dom.js";
import { count, ms, percent } from "../format.js";
import { filtersOf, rangeOptions, zoneField } from "../filters.js";
import { loading, moneyText, pageHeader, panel, planNote } from "../ui.js";

function subtree(f, root) {
  return get("/v1/analytics/tags/tree", { root, depth: 1, from: f.from, to: f.to, tz: f.tz });
}

export default {
  title: "Tag tree", icon: "⌥", fallbackRange: "month",
  async render(main, ctx) {
    const p = ctx.params;
    const f = filtersOf(p, "month");
    const root = p.get("root") || "";
    const form = h("form", { class: "filters", role: "search", "aria-label": "Tree options" },
      field(`Range (${f.tz})`, select({ name: "range" }, rangeOptions(f.range.preset).filter(([v]) => v !== "custom" || f.range.preset === v),
        f.range.preset)),
      f.range.preset === "custom" ? [h("input", { type: "hidden", name: "from", value: p.get("from") || "" }),
        h("input", { type: "hidden", name: "to", value: p.get("to") || "" })] : null,
      field("Root tag", h("input", { name: "root", value: root, placeholder: "all roots, or e.g. team", size: 20 })),
      zoneField(f.tz),
      h("div", { class: "field field-actions" }, h("button", { class: "primary", type: "submit" }, "Show")));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const next = new URLSearchParams();
      for (const [k, v] of new FormData(form)) if (v) next.set(k, v);
      ctx.apply(next);
    });
    main.append(pageHeader("Tag tree", "Each request counts once in every node it is under: children can add up "
      + "to more than their parent."), form);
    const body = h("div");
    main.append(body);
    const doc = await loading(body, subtree(f, root || undefined), "Reading the tag roll-ups");
    if (!ctx.isCurrent()) return;
    const range = Object.fromEntries(["range", "from", "to", "tz"].filter((k) => p.get(k)).map((k) => [k, p.get(k)]));
    const tbody = h("tbody");
    const tableEl = h("table", { class: "data tree", role: "treegrid", "aria-label": "Tag tree" },
      h("thead", {}, h("tr", {}, ["Tag", "Spend (USD)", "Requests", "Errors", "Error rate", "Latency p95", ""]
        .map((c, i) => h("th", { scope: "col", class: i > 0 && i < 6 ? "num" : null }, c)))), tbody);

    const addRows = (nodes, after, level) => {
      let anchor = after;
      for (const node of nodes) {
        const row = nodeRow(node, level);
        if (anchor) anchor.after(row); else tbody.append(row);
        anchor = row;
      }
      return anchor;
    };

    const nodeRow = (node, level) => {
      const name = node.tag.split("/").pop();
      const toggle = h("button", { type: "button", class: "toggle", "aria-expanded": "false",
        "aria-label": `Expand ${node.tag}` }, "▸");
      const tr = h("tr", { "aria-level": String(level), dataset: { tag: node.tag, level: String(level) } },
        h("td", { class: "tree-cell", style: `padding-left:${0.5 + (level - 1) * 1.4}rem` }, toggle,
          h("span", { class: "tag-name", title: node.tag }, name)),
        h("td", { class: "num" }, moneyText(node.cost)),
        h("td", { class: "num" }, count(node.requests)),
        h("td", { class: "num" }, count(node.errors)),
        h("td", { class: "num" }, percent(node.error_rate)),
        h("td", { class: "num" }, ms(node.latency_ms.p95)),
        h("td", {}, h("div", { class: "row-links" },
          h("a", { href: `/dashboard/explore?${new URLSearchParams({ ...range, tag: node.tag, group: `tag_level.${level + 1}` })}` }, "Explore"),
          h("a", { href: `/dashboard/logs?${new URLSearchParams({ ...range, tag: node.tag })}` }, "Logs"))));
      let open = false;
      let kids = [];
      toggle.addEventListener("click", async () => {
        if (open) {
          for (const k of kids) k.remove();
          kids = [];
          open = false;
          toggle.setAttribute("aria-expanded", "false");
          toggle.textContent = "▸";
          return;
        }
        toggle.textContent = "…";
        const sub = await subtree(f, node.tag);
        const children = (sub.data[0] && sub.data[0].children) || [];
        if (!children.length) {
          toggle.disabled = true;
          toggle.textContent = "·";
          toggle.setAttribute("aria-label", `${node.tag} has no children`);
          return;
        }
        const before = tr.nextSibling;
        addRows(children, tr, level + 1);
        kids = [];
        for (let r = tr.nextSibling; r && r !== before; r = r.nextSibling) kids.push(r);
        open = true;
        toggle.setAttribute("aria-expanded", "true");
        toggle.textContent = "▾";
        document.body.dataset.expanded = node.tag;
      });
      return tr;
    };
    // Every root, or the chosen root's children (the root's own figures are the totals above).
    const top = root ? (doc.data[0] && doc.data[0].children) || [] : doc.data;
    addRows(top, null, root ? root.split("/").length + 1 : 1);
    clear(body, panel(root ? `Under ${root}` : "Every root", [
      h("div", { class: "kpis small" },
        h("div", {}, h("span", { class: "muted" }, root ? `Spend under ${root} ` : "Tagged spend "), moneyText(doc.totals.cost)),
        h("div", {}, h("span", { class: "muted" }, "Requests "), count(doc.totals.requests))),
      h("div", { class: "table-wrap" }, tableEl),
      top.length ? null : h("p", { class: "empty" }, "No tagged requests in this range."),
      planNote(doc)]));
  },
};

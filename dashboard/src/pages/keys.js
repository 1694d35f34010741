// Keys: the list with labels and spend against limit; create (secret shown once, with a copy
// button), edit name / labels / limit / policy, revoke; the users behind the keys; budgets when
// the budget engine's API is there.

import { ApiError, call, get } from "../api.js";
import { clear, field, h, select } from "../dom.js";
import { keyIndex } from "../filters.js";
import { day } from "../format.js";
import { loading, pageHeader, periodMeter, panel, table } from "../ui.js";
import { byKey, keyLimits, limitsCell, refusalsCell, usageNote } from "./keylimits.js";

const labelText = (labels) => Object.entries(labels || {}).map(([k, v]) => `${k}=${v}`).join("\n");

function parseLabels(text) {
  const labels = {};
  for (const line of text.split(/[\n,]/)) {
    if (!line.trim()) continue;
    const at = line.indexOf("=");
    if (at < 1) throw new Error(`labels are written name=value, one a line: ${JSON.stringify(line.trim())}`);
    labels[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return labels;
}

/** A modal <dialog> (Esc closes it, focus stays inside) holding `content`; returns it opened. */
function modal(title, content) {
  const dlg = h("dialog", { class: "modal", "aria-labelledby": "modal-title" },
    h("h2", { id: "modal-title" }, title), content);
  dlg.addEventListener("close", () => dlg.remove());
  document.body.append(dlg);
  dlg.showModal();
  return dlg;
}

function keyForm(initial, onSubmit, submitText, creating) {
  const status = h("p", { class: "form-error", role: "alert" });
  const form = h("form", { class: "stack", method: "dialog" },
    field("Name", h("input", { name: "name", required: true, value: initial.name || "", maxlength: 200 })),
    field("Labels", h("textarea", { name: "labels", rows: 4, placeholder: "team=growth\nenv=prod" }, labelText(initial.labels)),
      "one name=value a line; the whole set replaces the old one"),
    field("Monthly limit (USD)", h("input", { name: "monthly_limit", inputmode: "decimal", value: initial.monthly_limit || "",
      placeholder: "none" }), "exact decimal, empty for no limit"),
    creating ? h("div", { class: "row" },
      field("Completions", select({ name: "completions" }, [["write", "write"], ["none", "none"]], "write")),
      field("Manage", select({ name: "manage" }, [["none", "none"], ["read", "read"], ["write", "write"]], "none"))) : null,
    field("Routing policy", h("input", { name: "policy", value: initial.policy || "", placeholder: "none" })),
    status,
    h("div", { class: "dialog-actions" },
      h("button", { type: "button", class: "ghost", onclick: (ev) => ev.target.closest("dialog").close() }, "Cancel"),
      h("button", { type: "submit", class: "primary" }, submitText)));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const data = new FormData(form);
    try {
      const body = { name: data.get("name").trim(), labels: parseLabels(String(data.get("labels"))) };
      const limit = String(data.get("monthly_limit")).trim();
      if (creating) {
        if (limit) body.monthly_limit = limit;
        body.permissions = { completions: data.get("completions"), manage: data.get("manage") };
      } else {
        body.monthly_limit = limit || null;
      }
      const policy = String(data.get("policy")).trim();
      if (policy) body.policy = policy;
      else if (!creating && initial.policy) body.policy = null;
      await onSubmit(body, form.closest("dialog"));
    } catch (err) {
      status.textContent = err instanceof ApiError || err instanceof Error ? err.message : String(err);
    }
  });
  return form;
}

function showSecret(created, done) {
  const secret = h("input", { readonly: true, value: created.key, class: "secret", id: "new-secret",
    "aria-label": "the new key's secret", onfocus: (ev) => ev.target.select() });
  const copied = h("span", { class: "muted", role: "status" });
  const dlg = modal(`Key “${created.name}” created`, h("div", { class: "stack" },
    h("p", {}, "Copy the secret now: it is shown this once and only its hash is stored."),
    h("div", { class: "row" }, secret, h("button", { type: "button", class: "primary", id: "copy-secret",
      onclick: async () => {
        secret.select();
        try {
          await navigator.clipboard.writeText(secret.value);
        } catch {
          document.execCommand("copy");
        }
        copied.textContent = "Copied.";
      } }, "Copy")),
    copied,
    h("div", { class: "dialog-actions" }, h("button", { type: "button", class: "primary", id: "secret-done",
      onclick: () => dlg.close() }, "Done"))));
  dlg.addEventListener("close", () => {
    secret.value = "";
    done();
  });
}

export default {
  title: "Keys", icon: "◈",
  async render(main, ctx) {
    const p = ctx.params;
    const reload = () => {
      keyIndex(true).catch(() => null);
      ctx.apply(new URLSearchParams(p));
    };
    const createBtn = ctx.canWrite ? h("button", { type: "button", class: "primary", id: "create-key", onclick: () => {
      const dlg = modal("Create a key", keyForm({}, async (body) => {
        const created = await call("POST", "/v1/manage/apikey", body);
        dlg.close();
        showSecret(created, reload);
      }, "Create key", true));
    } }, "Create key") : h("span", { class: "badge" }, "read-only: manage: write is needed to change keys");
    main.append(pageHeader("Keys", "Every key is a labelled, capped record; spend is counted over each limit's window (calendar ones in the reporting time zone).", createBtn));
    const filter = h("form", { class: "filters", role: "search" },
      field("Label filter", h("input", { name: "label", value: p.get("label") || "", placeholder: "team=growth", size: 20 })),
      h("div", { class: "field field-actions" }, h("button", { type: "submit", class: "primary" }, "Filter")));
    filter.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const v = new FormData(filter).get("label");
      ctx.apply(new URLSearchParams(v ? { label: v } : {}));
    });
    main.append(filter);
    const body = h("div");
    main.append(body);
    const params = { limit: 50, cursor: p.get("cursor") || undefined };
    const lf = (p.get("label") || "").split("=");
    if (lf.length === 2) params[`label.${lf[0].trim()}`] = lf[1].trim();
    const budgets = ctx.features.budgets ? get("/v1/manage/budget") : Promise.resolve(null);
    const keysAndLimits = get("/v1/manage/apikey", params).then(async (keyPage) => [keyPage, await keyLimits(keyPage.data)]);
    const [[page, usageDoc], budgetDoc] = await loading(body, Promise.all([keysAndLimits, budgets]), "Loading keys");
    if (!ctx.isCurrent()) return;

    const edit = (k) => {
      const dlg = modal(`Edit “${k.name}”`, keyForm(k, async (bodyDoc) => {
        await call("PUT", `/v1/manage/apikey/${k.id}`, bodyDoc);
        dlg.close();
        reload();
      }, "Save", false));
    };
    const revoke = (k) => {
      const dlg = modal(`Revoke “${k.name}”?`, h("div", { class: "stack" },
        h("p", {}, "The key fails on its next request. Its record and history stay."),
        h("p", { class: "form-error", role: "alert" }),
        h("div", { class: "dialog-actions" },
          h("button", { type: "button", class: "ghost", onclick: () => dlg.close() }, "Cancel"),
          h("button", { type: "button", class: "danger", id: "confirm-revoke", onclick: async (ev) => {
            try {
              await call("DELETE", `/v1/manage/apikey/${k.id}`);
              dlg.close();
              reload();
            } catch (err) {
              ev.target.closest(".stack").querySelector(".form-error").textContent = err.message;
            }
          } }, "Revoke"))));
    };
    const rows = page.data;
    const limitsByKey = byKey(usageDoc);
    const listing = table([
      { label: "Key", value: (k) => h("div", { class: "key-cell" }, h("div", { class: "strong" }, k.name),
        h("code", { class: "muted" }, k.key_prefix ? `${k.key_prefix}…` : ""),
        h("div", { class: "muted" }, `created ${k.created_at ? day(Date.parse(k.created_at)) : "—"}`
          + (k.created_by.name ? ` by ${k.created_by.name}` : ""))) },
      { label: "Labels", value: (k) => h("div", { class: "chips" },
        Object.entries(k.labels).map(([n, v]) => h("span", { class: "chip" }, `${n}=${v}`))) },
      { label: "Permissions", value: (k) => h("div", { class: "perm" }, h("div", {}, `completions: ${k.permissions.completions}`),
        h("div", {}, `manage: ${k.permissions.manage}`)) },
      { label: "Spend / limit", value: (k) => periodMeter(k.monthly_spend, k.monthly_limit, k.period) },
      { label: "Rate limits (now)", value: (k) => limitsCell(limitsByKey.get(k.id)) },
      { label: "Refused (1 h)", value: (k) => refusalsCell(limitsByKey.get(k.id)) },
      { label: "Policy", value: (k) => k.policy || h("span", { class: "muted" }, "—") },
      { label: "", value: (k) => (k.revoked_at ? h("span", { class: "badge danger" }, "revoked")
        : ctx.canWrite ? h("div", { class: "row-actions" },
          h("button", { type: "button", class: "ghost small", onclick: () => edit(k), "aria-label": `Edit ${k.name}` }, "Edit"),
          h("button", { type: "button", class: "ghost small danger-text", onclick: () => revoke(k),
            "aria-label": `Revoke ${k.name}` }, "Revoke")) : null) },
    ], rows, { rowClass: (k) => (k.revoked_at ? "revoked" : null), rowData: (k) => ({ key: k.id }),
      empty: "No keys match." });
    const pager = h("div", { class: "pager" },
      p.get("cursor") ? h("a", { class: "button ghost", href: "/dashboard/keys" }, "← First page") : null,
      page.next_cursor ? h("a", { class: "button ghost", href: `/dashboard/keys?${new URLSearchParams({
        ...(p.get("label") ? { label: p.get("label") } : {}), cursor: page.next_cursor })}` }, "Next page →") : null);
    const users = new Map();
    for (const k of rows) {
      const u = users.get(k.created_by.id) || { ...k.created_by, keys: 0 };
      u.keys += 1;
      users.set(k.created_by.id, u);
    }
    clear(body,
      panel("API keys", [listing, usageNote(usageDoc), pager]),
      h("div", { class: "grid2" },
        panel("Users", [table([
          { label: "User", value: (u) => u.name || "—" },
          { label: "Keys created (this page)", num: true, value: (u) => String(u.keys) },
        ], [...users.values()]), h("p", { class: "plan-note" }, "Management keys belong to users; create one with "
          + "`tallygate users create --name alice`.")]),
        budgetDoc ? panel("Budgets", table([
          { label: "Budget", value: (b) => h("span", { dataset: { budget: b.id } }, b.name || b.id) },
          { label: "Scope", value: (b) => scopeText(b.scope) },
          { label: "Spend against limit", value: (b) => periodMeter(b.monthly_spend ?? "0", b.monthly_limit, b.period) },
        ], budgetDoc.data || [], { empty: "No budget yet: create one with POST /v1/manage/budget." })) : null));
  },
};

/** A budget's scope as text: "label team=growth", "tag team/search" or "key <id>". */
function scopeText(scope) {
  if (!scope) return "—";
  if (scope.label) return `label ${Object.entries(scope.label).map(([k, v]) => `${k}=${v}`).join(", ")}`;
  if (scope.tag) return `tag ${scope.tag}`;
  return scope.key ? `key ${scope.key}` : "—";
}

// The shell: sign-in, navigation, and a router over /dashboard/<page>?<state>.

import "./style.css";
import { ApiError, session, setCsrf } from "./api.js";
import { rangeOf, setDefaultZone } from "./filters.js";
import { clear, h } from "./dom.js";
import { when } from "./format.js";
import overview from "./pages/overview.js";
import oncall from "./pages/oncall.js";
import explore from "./pages/explore.js";
import tree from "./pages/tree.js";
import keys from "./pages/keys.js";
import logs from "./pages/logs.js";
import invoices from "./pages/invoices.js";

const PAGES = { overview, oncall, explore, tree, keys, logs, invoices };
const BASE = "/dashboard/";
const app = document.getElementById("app");
let me = null; // {key: {name, permissions}, expires_at}
let renderSeq = 0;

function pageName() {
  const name = location.pathname.slice(BASE.length).split("/")[0];
  return PAGES[name] ? name : "overview";
}

/** Go to a dashboard URL without reloading (links, filters). */
export function go(url, replace = false) {
  history[replace ? "replaceState" : "pushState"](null, "", url);
  route();
}

function link(name) {
  const page = PAGES[name];
  const current = pageName() === name;
  return h("a", { href: `${BASE}${name}`, class: current ? "nav-link current" : "nav-link",
    "aria-current": current ? "page" : null }, h("span", { class: "nav-icon", "aria-hidden": "true" }, page.icon),
  page.title);
}

function shell() {
  const canWrite = me.key.permissions.manage === "write";
  const main = h("main", { id: "main", tabindex: "-1" });
  clear(app,
    h("a", { href: "#main", class: "skip" }, "Skip to content"),
    h("nav", { class: "sidebar", "aria-label": "Pages" }, h("div", { class: "sidebar-inner" },
      h("div", { class: "brand" }, h("span", { class: "brand-mark", "aria-hidden": "true" }, "◆"), "Tallygate"),
      Object.keys(PAGES).map(link),
      h("div", { class: "whoami" },
        h("div", { class: "whoami-name" }, me.key.name),
        h("div", { class: "whoami-perm" }, canWrite ? "manage: write" : "manage: read (read-only)"),
        h("div", { class: "whoami-exp", title: "the session ends then" }, `until ${when(me.expires_at)}`),
        h("button", { type: "button", class: "ghost", id: "sign-out", onclick: signOut }, "Sign out")))),
    main);
  return main;
}

async function route() {
  if (!me) return;
  const seq = ++renderSeq;
  const name = pageName();
  delete document.body.dataset.rendered; // set again once this page's data is on screen
  document.title = `${PAGES[name].title} · Tallygate`;
  const main = shell();
  const params = new URLSearchParams(location.search);
  const ctx = {
    params, canWrite: me.key.permissions.manage === "write", features: me.features || {}, isCurrent: () => seq === renderSeq,
    apply: (next) => go(`${location.pathname}${next.toString() ? `?${next}` : ""}`),
  };
  // A range the URL names but no page can read is said, never swapped silently for another.
  const rangeError = PAGES[name].fallbackRange && rangeOf(params, PAGES[name].fallbackRange).error;
  if (rangeError) main.append(h("div", { class: "error range-error", role: "alert" }, rangeError));
  try {
    await PAGES[name].render(main, ctx);
  } catch (err) {
    if (seq !== renderSeq) return;
    if (!err.shown) main.append(h("div", { class: "error", role: "alert" }, err instanceof ApiError ? err.message : String(err)));
    console.warn(err);
  }
  if (seq === renderSeq) {
    performance.mark("tg:data-rendered");
    document.body.dataset.rendered = name;
  }
}

function signInForm(message) {
  const keyInput = h("input", { type: "password", name: "key", id: "signin-key", required: true,
    autocomplete: "off", spellcheck: "false", placeholder: "tg-…" });
  const status = h("p", { class: "signin-error", role: "alert" }, message || "");
  const form = h("form", { class: "signin-card", "aria-labelledby": "signin-title" },
    h("div", { class: "brand" }, h("span", { class: "brand-mark", "aria-hidden": "true" }, "◆"), "Tallygate"),
    h("h1", { id: "signin-title" }, "Sign in to the dashboard"),
    h("p", { class: "muted" }, "Use a key with manage: read (to look) or manage: write (to act). It is exchanged "
      + "for a session cookie and not kept by this page."),
    h("label", { for: "signin-key", class: "field-label" }, "Management key"), keyInput, status,
    h("button", { type: "submit", class: "primary wide" }, "Sign in"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    status.textContent = "";
    try {
      const doc = await session.signIn(keyInput.value);
      keyInput.value = "";
      start(doc);
    } catch (err) {
      keyInput.value = "";
      status.textContent = err instanceof ApiError ? err.message : "the gateway did not answer";
      keyInput.focus();
    }
  });
  clear(app, h("div", { class: "signin" }, form));
  document.title = "Sign in · Tallygate";
  keyInput.focus();
  document.body.dataset.rendered = "signin";
}

function start(doc) {
  me = doc;
  setCsrf(doc.csrf_token);
  setDefaultZone(doc.reporting && doc.reporting.timezone);
  route();
}

async function signOut() {
  try {
    await session.signOut();
  } finally {
    me = null;
    setCsrf(null);
    signInForm("Signed out.");
  }
}

document.addEventListener("click", (ev) => {
  const a = ev.target.closest("a[href]");
  if (!a || ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || a.target
    || a.hasAttribute("download")) return;
  if (a.getAttribute("href").startsWith("#")) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith(BASE)) return;
  ev.preventDefault();
  go(url.pathname + url.search);
});
window.addEventListener("popstate", route);
window.addEventListener("tg:signed-out", () => {
  if (!me) return;
  me = null;
  signInForm("Your session has ended: sign in again.");
});

session.current().then((doc) => (doc.signed_in ? start(doc) : signInForm()), () => signInForm());

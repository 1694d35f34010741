// Every call the dashboard makes: the public JSON APIs, with the session cookie (sent by the
// browser) and, on changes, the session's CSRF token. The management key never reaches here.

let csrfToken = null;

export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || null;
    this.param = err.param || null;
  }
}

export function setCsrf(token) {
  csrfToken = token;
}

export async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  const res = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  const data = text ? JSON.parse(text) : null;
  if (!res.ok) {
    const error = new ApiError(res.status, data);
    if (res.status === 401 && path !== "/v1/dashboard/session") window.dispatchEvent(new CustomEvent("tg:signed-out"));
    throw error;
  }
  return data;
}

export const get = (path, params) => call("GET", params ? `${path}?${query(params)}` : path);

/** URLSearchParams from an object, leaving out empty values; arrays repeat the name. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "") continue;
    for (const item of Array.isArray(v) ? v : [v]) q.append(k, String(item));
  }
  return q.toString();
}

/** Analytics `usage` with the shared filters (`f` from filters.js) and a group_by list. */
export function usage(f, groupBy, extra = {}) {
  return get("/v1/analytics/usage", { ...filterParams(f), group_by: groupBy.filter(Boolean).join(","), ...extra });
}

export function filterParams(f) {
  const p = { from: f.from, to: f.to, tz: f.tz, tag: f.tag, key: f.key, model: f.model };
  for (const [name, value] of Object.entries(f.labels || {})) p[`label.${name}`] = value;
  return p;
}

export const session = {
  current: () => call("GET", "/v1/dashboard/session"),
  signIn: (key) => call("POST", "/v1/dashboard/session", { key }),
  signOut: () => call("DELETE", "/v1/dashboard/session"),
};

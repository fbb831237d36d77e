// Calls to the admin API (/api/v1) with the console's login cookie. The
// cookie is HttpOnly: this code never sees the token, only the login's CSRF
// value, which every request that is not a GET echoes in X-CSRF-Token.

const BASE = "/api/v1";
let csrf = "";

/** An error answer of the API: HTTP status, stable code, message for people. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Calls `method path` with an optional JSON body; resolves to the JSON answer (null when empty). */
export async function call(method, path, body) {
  const headers = {};
  if (method !== "GET") headers["X-CSRF-Token"] = csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(BASE + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
  } catch (error) {
    throw new ApiError(0, "network", `the server did not answer (${error.message})`);
  }
  const text = await response.text();
  const json = text ? parseJson(text) : null;
  if (!response.ok) {
    const error = (json && json.error) || {};
    const failure = new ApiError(response.status, error.code || "http_" + response.status,
      error.message || `${response.status} ${response.statusText}`);
    // An expired or revoked login: back to the login form.
    if (response.status === 401 && !path.startsWith("/auth/")) loginLost(failure);
    throw failure;
  }
  return json;
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/** A query string from the parameters that are set. */
export function query(params) {
  const set = Object.entries(params).filter(([, value]) => value !== undefined && value !== "" && value !== null);
  return set.length ? "?" + new URLSearchParams(set).toString() : "";
}

/** A JID (or room JID, group name) as one path segment. */
export function segment(value) {
  return encodeURIComponent(value);
}

let loginLost = () => {};

/** Calls `handler(error)` when a request is refused for want of a valid login. */
export function onLoginLost(handler) {
  loginLost = handler;
}

/** Who is logged in (and the CSRF value), or null when the cookie holds no login. */
export async function currentLogin() {
  try {
    const me = await call("GET", "/auth/me");
    csrf = me.csrf || "";
    return me;
  } catch (error) {
    if (error.status === 401) return null;
    throw error;
  }
}

export async function login(jid, password) {
  const answer = await call("POST", "/auth/console-login", { jid, password });
  csrf = answer.csrf;
  return answer;
}

export async function logout() {
  try {
    await call("POST", "/auth/logout");
  } finally {
    csrf = "";
  }
}

// The console's only way to the gateway: the public /v1 API with the session cookie, the session's CSRF
// token on every change, and (for admins) the tenant they chose.
export const session = { user: null, role: null, tenant: null, csrf: null, tenants: [], acting: null };

export class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

export function withTenant(path) {
  if (session.role !== "admin" || !session.acting) return path;
  return path + (path.includes("?") ? "&" : "?") + "tenant=" + encodeURIComponent(session.acting);
}

export async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (!["GET", "HEAD"].includes(method) && session.csrf) headers["X-CSRF-Token"] = session.csrf;
  const response = await fetch(path, {
    method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 204) return null;
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) throw new ApiError(response.status, (data && data.detail) || response.statusText);
  return data;
}

export async function loadSession() {
  try {
    Object.assign(session, sessionFrom(await api("GET", "/v1/session")));
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 401) throw error;
    session.user = null;
  }
  return session.user !== null;
}

export async function signIn(username, password) {
  Object.assign(session, sessionFrom(await api("POST", "/v1/session", { username, password })));
}

export async function signOut() {
  await api("DELETE", "/v1/session");
  session.user = null;
}

function sessionFrom(info) {
  const acting = info.role === "admin" ? (session.acting || info.tenants[0] || null) : info.tenant;
  return { user: info.user, role: info.role, tenant: info.tenant, csrf: info.csrf_token, tenants: info.tenants, acting };
}

export function liveStream(device, onEvent) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const url = `${scheme}//${location.host}${withTenant("/v1/events/stream?type=org.edgegw.telemetry&device=" + encodeURIComponent(device))}`;
  const socket = new WebSocket(url);
  socket.onmessage = (message) => onEvent(JSON.parse(message.data));
  return socket;
}

// The console's pages, routed by the URL's hash. Everything shown comes from the /v1 API in the signed-in
// user's tenant; text is always set as text (never as HTML), so a device's or point's name cannot inject markup.
import { api, ApiError, liveStream, loadSession, session, signIn, signOut, withTenant } from "./api.js";
import { historyChart } from "./chart.js";

const main = document.getElementById("main");
let cleanup = [];  // timers and sockets of the page shown; stopped when another page opens

function h(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== false && value !== null && value !== undefined) node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

function show(...nodes) { main.replaceChildren(...nodes); }
function failure(error) { return h("p", { class: "error", role: "alert" }, error.message || String(error)); }
function every(ms, fn) { fn(); const id = setInterval(fn, ms); cleanup.push(() => clearInterval(id)); }

function confirmDialog(text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}

function age(time) {
  if (!time) return "";
  const seconds = Math.max(0, (Date.now() - Date.parse(time)) / 1000);
  return seconds < 90 ? `${seconds.toFixed(0)} s` : `${(seconds / 60).toFixed(0)} min`;
}

function formatValue(value) {
  if (typeof value === "number") return String(+value.toPrecision(6));
  return value === null || value === undefined ? "—" : String(value);
}

// ---- sign-in ---------------------------------------------------------------------------------------------

function signInPage() {
  let message = h("p");
  const form = h("form", { class: "signin", id: "signin-form" },
    h("h1", {}, "Sign in"),
    h("label", {}, "Account", h("input", { name: "username", id: "username", autocomplete: "username", required: true })),
    h("label", {}, "Password", h("input", { name: "password", id: "password", type: "password", autocomplete: "current-password", required: true })),
    h("button", { type: "submit", id: "signin" }, "Sign in"), message);
  api("GET", "/v1/session/methods").then((methods) => {
    if (methods.oidc) form.append(h("p", {}, h("a", { href: "/v1/session/oidc/start", id: "oidc-signin" }, "Sign in with your organisation's account")));
  }, () => {});
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await signIn(form.username.value, form.password.value);
      chrome();
      location.hash = "#/overview";
      route();
    } catch (error) { message.replaceWith(message = failure(error)); }
  });
  show(form);
}

// ---- overview --------------------------------------------------------------------------------------------

function overviewPage() {
  let previous = null;
  const body = h("div");
  show(h("h1", {}, "Overview"), body);
  every(2000, async () => {
    try {
      const o = await api("GET", withTenant("/v1/overview"));
      const now = Date.now();
      const rate = previous ? (o.points_read - previous.points) / ((now - previous.at) / 1000) : null;
      previous = { points: o.points_read, at: now };
      body.replaceChildren(
        h("div", { class: "cards" },
          h("div", { class: "card" }, "Gateway", h("div", { class: "big " + (o.bus_connected ? "up" : "down") }, o.bus_connected ? "running" : "bus down"), `up ${(o.uptime / 60).toFixed(0)} min`),
          h("div", { class: "card" }, "Points/s", h("div", { class: "big", id: "points-rate" }, rate === null ? "…" : rate.toFixed(1))),
          h("div", { class: "card" }, "Outbox", h("div", { class: "big" }, o.outbox_events), `${(o.outbox_bytes / 1024).toFixed(0)} KiB of tenant ${o.tenant}`)),
        h("h2", {}, "Devices per site"),
        h("table", { id: "sites" }, h("tr", {}, h("th", {}, "site"), h("th", {}, "devices"), h("th", {}, "up"), h("th", {}, "down")),
          o.sites.map((s) => h("tr", {}, h("td", {}, s.site), h("td", {}, s.devices), h("td", { class: "up" }, s.up), h("td", { class: s.down ? "down" : "" }, s.down)))),
        h("h2", {}, "Backlogs"),
        h("table", { id: "backlogs" }, h("tr", {}, h("th", {}, "consumer"), h("th", {}, "events not yet taken")),
          Object.entries(o.backlogs).map(([c, n]) => h("tr", {}, h("td", {}, c), h("td", {}, n)))),
        h("h2", {}, "Modules"),
        h("table", {}, h("tr", {}, h("th", {}, "module"), h("th", {}, "state"), h("th", {}, "health")),
          o.modules.map((m) => h("tr", {}, h("td", {}, m.name), h("td", {}, m.state), h("td", { class: m.healthy ? "up" : "down" }, m.healthy ? "healthy" : "unhealthy")))),
        ...downlinkSection(o.downlink),
        h("h2", {}, "Certificates"),
        o.certificates.length ? h("table", {}, h("tr", {}, h("th", {}, "use"), h("th", {}, "expires"), h("th", {}, "days left")),
          o.certificates.map((c) => h("tr", {}, h("td", {}, c.use), h("td", {}, c.not_after), h("td", { class: c.days_left < 30 ? "bad" : "" }, c.days_left))))
          : h("p", {}, "No certificate: the API serves plain HTTP on a loopback address."));
    } catch (error) { body.replaceChildren(failure(error)); }
  });
}

// The tenant's link to its cloud platform: state, why it is retrying, the last message, the entitlement answer's age.
function downlinkSection(link) {
  if (!link) return [];
  const since = link.since ? ` since ${new Date(link.since * 1000).toLocaleTimeString()}` : "";
  const rows = [
    ["link", h("span", { class: link.state === "connected" ? "up" : "down" }, `${link.state}${since}`)],
    ["last error", link.last_error || "—"],
    ["last message", link.last_message ? `${link.last_message} (${age(new Date(link.last_message_at * 1000).toISOString())} ago)` : "none yet"],
    ["entitlement answer", link.entitlements === null ? "from the configuration file"
      : `${link.entitlements.join(", ") || "none"} (${link.entitlements_age.toFixed(0)} s old${link.entitlements_lapsed ? ", lapsed" : ""})`],
  ];
  return [h("h2", {}, "Cloud downlink"),
    h("table", { id: "downlink", "data-state": link.state }, rows.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, v))))];
}

// ---- devices and points ----------------------------------------------------------------------------------

function devicesPage() {
  const body = h("div");
  show(h("h1", {}, "Devices"), body);
  every(3000, async () => {
    try {
      const devices = await api("GET", withTenant("/v1/devices"));
      body.replaceChildren(h("table", { id: "devices" },
        h("tr", {}, ["device", "site", "driver", "state", "points", "last error"].map((t) => h("th", {}, t))),
        devices.map((d) => h("tr", {},
          h("td", {}, h("a", { href: `#/device/${encodeURIComponent(d.name)}` }, d.name)), h("td", {}, d.site), h("td", {}, d.driver),
          h("td", { class: d.up ? "up" : d.up === false ? "down" : "" }, d.up ? "up" : d.up === false ? "down" : "waiting"),
          h("td", {}, d.points), h("td", {}, d.last_error || "")))));
    } catch (error) { body.replaceChildren(failure(error)); }
  });
}

async function devicePage(name) {
  show(h("h1", {}, `Device ${name}`), h("p", {}, "Loading…"));
  let device;
  try { device = await api("GET", withTenant(`/v1/devices/${encodeURIComponent(name)}`)); } catch (error) {
    show(h("h1", {}, `Device ${name}`), failure(error));
    return;
  }
  const rows = new Map();
  const status = h("span", { id: "device-state", class: device.up ? "up" : "down" }, device.up ? "up" : device.up === false ? "down" : "waiting");
  const chart = h("div", { id: "chart" });
  const table = h("table", { id: "points" }, h("tr", {}, ["point", "value", "unit", "quality", "age", ""].map((t) => h("th", {}, t))));
  for (const p of device.point_values) {
    const cells = { value: h("td", { class: "value" }), quality: h("td"), age: h("td", { class: "age" }), time: p.time };
    const actions = h("td", {}, h("button", { onclick: () => showHistory(name, p.point, p.unit, chart) }, "History"),
      p.writable ? h("button", { class: "write", onclick: () => writePoint(name, p.point, p.unit) }, "Write…") : "");
    const row = h("tr", { "data-point": p.point }, h("td", {}, p.point), cells.value, h("td", {}, p.unit || ""), cells.quality, cells.age, actions);
    rows.set(p.point, cells);
    update(cells, p);
    table.append(row);
  }
  show(h("h1", {}, `Device ${name} `, status), h("p", {}, `${device.driver} at site ${device.site}, profile ${device.profile}`),
    h("p", { id: "live-state" }, "connecting the live stream…"), table, chart);
  const socket = liveStream(name, (event) => {
    for (const [point, sample] of Object.entries(event.data.points || {})) {
      const cells = rows.get(point);
      if (cells) update(cells, { ...sample, time: event.time });
    }
  });
  socket.onopen = () => { document.getElementById("live-state").textContent = "live"; };
  socket.onclose = (e) => { const s = document.getElementById("live-state"); if (s) s.textContent = `live stream closed (${e.code} ${e.reason})`; };
  cleanup.push(() => socket.close());
  every(1000, () => { for (const cells of rows.values()) cells.age.textContent = age(cells.time); });
}

function update(cells, sample) {
  cells.value.textContent = formatValue(sample.value);
  cells.quality.textContent = sample.quality || "";
  cells.quality.className = sample.quality || "";
  cells.time = sample.time;
  cells.age.textContent = age(sample.time);
}

async function showHistory(device, point, unit, into) {
  const since = new Date(Date.now() - 15 * 60 * 1000).toISOString();
  try {
    const page = await api("GET", withTenant(`/v1/devices/${encodeURIComponent(device)}/points/${encodeURIComponent(point)}/history?limit=1000&since=${encodeURIComponent(since)}`));
    into.replaceChildren(h("h2", {}, `${point}: the last 15 minutes (${page.samples.length} samples)`), historyChart(page.samples, unit));
  } catch (error) { into.replaceChildren(failure(error)); }
}

async function writePoint(device, point, unit) {
  const input = window.prompt(`New value for ${point}${unit ? " (" + unit + ")" : ""}`);
  if (input === null || input.trim() === "") return;
  const value = input === "true" ? true : input === "false" ? false : Number.isNaN(Number(input)) ? input : Number(input);
  if (!(await confirmDialog(`Write ${formatValue(value)}${unit ? " " + unit : ""} to ${device} / ${point}?`))) return;
  const result = h("p", { id: "write-result" });
  main.append(result);
  try {
    const written = await api("PUT", withTenant(`/v1/devices/${encodeURIComponent(device)}/points/${encodeURIComponent(point)}/value`), { value });
    result.textContent = `wrote ${formatValue(value)} to ${point}`;
    // taken with a remark (e.g. a BACnet error after applying it): the user sees what the device answered and holds
    if (written && written.reason) result.append(h("span", { class: "uncertain", id: "write-note" }, `; ${written.reason}`));
  } catch (error) { result.replaceWith(failure(error)); }
}

// ---- commissioning ---------------------------------------------------------------------------------------

function commissionPage() {
  const progress = h("pre", { class: "progress", id: "progress" });
  const proposals = h("div", { id: "proposals" });
  const form = h("form", { class: "inline", id: "discover-form" },
    h("label", {}, "Driver", h("select", { name: "driver", id: "driver" }, ["modbus", "bacnet", "opcua"].map((d) => h("option", {}, d)))),
    h("label", {}, "Targets (key=value, one per line)", h("textarea", { name: "targets", id: "targets", rows: 3, cols: 40 }, "host=127.0.0.1\nport=502\nunits=1-5")),
    h("button", { type: "submit", id: "discover" }, "Discover"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const targets = Object.fromEntries(form.targets.value.split("\n").map((l) => l.trim()).filter(Boolean).map((l) => {
      const at = l.indexOf("="); return [l.slice(0, at).trim(), l.slice(at + 1).trim()];
    }));
    proposals.replaceChildren();
    try {
      const job = await api("POST", withTenant("/v1/discoveries"), { driver: form.driver.value, targets });
      follow(job.id, progress, proposals);
    } catch (error) { proposals.replaceChildren(failure(error)); }
  });
  show(h("h1", {}, "Commissioning"), h("p", {}, "Find devices with a driver's discovery, review the proposed point map, then add the device: it is written to the configuration file and polled at once."), form, progress, proposals);
}

function follow(id, progress, proposals) {
  const timer = setInterval(async () => {
    try {
      const job = await api("GET", withTenant(`/v1/discoveries/${id}`));
      progress.textContent = job.progress.join("\n");
      if (job.state === "running") return;
      clearInterval(timer);
      if (job.state === "failed") { proposals.replaceChildren(failure(new Error(job.error))); return; }
      proposals.replaceChildren(...job.devices.map((d) => proposal(job, d)));
    } catch (error) { clearInterval(timer); proposals.replaceChildren(failure(error)); }
  }, 400);
  cleanup.push(() => clearInterval(timer));
}

function proposal(job, device) {
  const names = new Map();
  const pointRows = device.points.map((p) => {
    const input = h("input", { value: p.name, "data-proposed": p.name, class: "point-name" });
    names.set(p.name, input);
    return h("tr", {}, h("td", {}, input), h("td", {}, p.unit || ""), h("td", {}, p.type || p.kind || ""), h("td", {}, p.writable ? "writable" : ""));
  });
  const result = h("p");
  const form = h("form", { class: "inline add-device", "data-index": device.index },
    h("label", {}, "Device name", h("input", { name: "name", class: "device-name", required: true, value: (device.profile || "device").slice(0, 40) })),
    h("label", {}, "Site", h("input", { name: "site", class: "device-site", required: true, value: "" })),
    h("label", {}, "Poll interval (s)", h("input", { name: "poll", type: "number", step: "0.1", min: "0.1", value: "1" })),
    h("button", { type: "submit", class: "add" }, "Add device"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const renamed = {};
    for (const [proposed, input] of names) if (input.value !== proposed) renamed[proposed] = input.value;
    try {
      const added = await api("POST", withTenant(`/v1/discoveries/${job.id}/devices/${device.index}`),
        { name: form.name.value, site: form.site.value, poll_interval: Number(form.poll.value), names: renamed });
      location.hash = `#/device/${encodeURIComponent(added.device)}`;
    } catch (error) { result.replaceChildren(failure(error)); }
  });
  return h("section", { class: "proposal" },
    h("h2", {}, `${device.address}: ${Object.entries(device.identity).filter(([k]) => ["manufacturer", "model", "serial", "vendor"].includes(k)).map(([, v]) => v).join(" ")}`),
    h("p", {}, device.points.length ? `${device.points.length} proposed points (rename any before adding)` : `profile ${device.profile}`),
    form, result, device.points.length ? h("table", { class: "proposed-points" }, h("tr", {}, ["point", "unit", "type", ""].map((t) => h("th", {}, t))), pointRows) : "");
}

// ---- alarms ----------------------------------------------------------------------------------------------

function alarmsPage() {
  const body = h("div");
  show(h("h1", {}, "Alarms"), body);
  every(3000, async () => {
    try {
      const answer = await api("POST", withTenant("/v1/modules/alarms/commands/list"), { args: {} });
      if (!answer.ok) throw new Error(answer.reason);
      const alarms = answer.result.alarms || [];
      body.replaceChildren(alarms.length === 0 ? h("p", { id: "no-alarms" }, "No unresolved alarms.") : h("table", { id: "alarms" },
        h("tr", {}, ["alarm", "severity", "state", "value", "since", ""].map((t) => h("th", {}, t))),
        alarms.map((a) => h("tr", { "data-alarm": a.alarm_id },
          h("td", {}, a.alarm_id), h("td", {}, a.severity), h("td", { class: a.state === "raised" ? "bad" : "" }, a.state),
          h("td", {}, formatValue(a.value)), h("td", {}, a.since),
          h("td", {}, a.acknowledged ? `acknowledged by ${a.acknowledged_by || "?"}` : h("button", { class: "ack", onclick: () => acknowledge(a.alarm_id) }, "Acknowledge"))))));
    } catch (error) { body.replaceChildren(failure(error)); }
  });
}

async function acknowledge(alarm) {
  if (!(await confirmDialog(`Acknowledge ${alarm}?`))) return;
  try {
    const answer = await api("POST", withTenant("/v1/modules/alarms/commands/ack"), { args: { alarm_id: alarm, by: session.user } });
    if (!answer.ok) throw new Error(answer.reason);
    route();
  } catch (error) { main.append(failure(error)); }
}

// ---- tenants (admin) -------------------------------------------------------------------------------------

async function tenantsPage() {
  show(h("h1", {}, "Tenants"), h("p", {}, "Loading…"));
  try {
    const tenants = await api("GET", "/v1/tenants");
    const sections = [];
    for (const t of tenants) sections.push(await tenantSection(t));
    show(h("h1", {}, "Tenants"), ...sections);
  } catch (error) { show(h("h1", {}, "Tenants"), failure(error)); }
}

async function tenantSection(tenant) {
  const id = encodeURIComponent(tenant.id);
  const users = await api("GET", `/v1/tenants/${id}/mqtt-users`);
  const hooks = await api("GET", `/v1/webhooks?tenant=${id}`);
  const secret = h("div", { class: "mqtt-secret" });
  const flags = h("input", { value: tenant.entitlements.join(", "), class: "entitlements", size: 40 });
  const saveFlags = h("button", { onclick: async () => {
    try {
      await api("PUT", `/v1/tenants/${id}/entitlements`, { entitlements: flags.value.split(",").map((f) => f.trim()).filter(Boolean) });
      tenantsPage();
    } catch (error) { secret.replaceChildren(failure(error)); }
  } }, "Save entitlements");
  const reveal = (made) => secret.replaceChildren(h("p", {}, `Password of ${made.username} (shown once): `, h("span", { class: "secret" }, made.password)), h("p", {}, made.applied));
  const name = h("input", { placeholder: "new user name", class: "mqtt-name" });
  const create = h("button", { class: "mqtt-create", onclick: async () => {
    try { reveal(await api("POST", `/v1/tenants/${id}/mqtt-users`, { name: name.value })); } catch (error) { secret.replaceChildren(failure(error)); }
  } }, "Create MQTT user");
  return h("section", { "data-tenant": tenant.id },
    h("h2", {}, `${tenant.name || tenant.id} (${tenant.id}), ${tenant.devices} devices`),
    h("p", {}, "Entitlements: ", flags, " ", saveFlags),
    h("table", { class: "mqtt-users" }, h("tr", {}, ["MQTT user", "rights", ""].map((t) => h("th", {}, t))),
      users.map((u) => h("tr", {}, h("td", {}, u.username), h("td", {}, u.read_only ? "read" : "read, write commands"),
        h("td", {}, h("button", { class: "rotate", onclick: async () => {
          try { reveal(await api("POST", `/v1/tenants/${id}/mqtt-users/${encodeURIComponent(u.name)}/rotate`)); } catch (error) { secret.replaceChildren(failure(error)); }
        } }, "Rotate password"))))),
    h("p", {}, name, " ", create), secret,
    webhooksPart(tenant.id, hooks));
}

// A tenant's webhook subscriptions: the API's /v1/webhooks routes (the store `edge webhook` uses), the signing
// secret shown once when a subscription is made.
function webhooksPart(tenantId, hooks) {
  const path = (rest = "") => `/v1/webhooks${rest}?tenant=${encodeURIComponent(tenantId)}`;
  const message = h("div", { class: "webhook-secret" });
  const row = (w) => {
    const remove = h("button", { class: "webhook-remove", onclick: async () => {
      if (!(await confirmDialog(`Remove the webhook to ${w.url} (${w.id})? Its undelivered events and dead letters go with it.`))) return;
      try {
        await api("DELETE", path(`/${encodeURIComponent(w.id)}`));
        tr.remove();
        message.replaceChildren(h("p", {}, `Removed ${w.id}.`));
      } catch (error) { message.replaceChildren(failure(error)); }
    } }, "Remove");
    const tr = h("tr", { "data-webhook": w.id }, h("td", {}, w.url), h("td", {}, w.types.join(", ") || "all"),
      h("td", {}, w.state_reason ? `${w.state} (${w.state_reason})` : w.state), h("td", {}, remove));
    return tr;
  };
  const table = h("table", { class: "webhooks" }, h("tr", {}, ["webhook", "types", "state", ""].map((t) => h("th", {}, t))), hooks.map(row));
  const url = h("input", { class: "webhook-url", type: "url", placeholder: "https://bms.example.com/hook", size: 40 });
  const types = h("input", { class: "webhook-types", placeholder: "event types, comma-separated (empty: all)", size: 30 });
  const add = h("button", { class: "webhook-add", onclick: async () => {
    try {
      const made = await api("POST", path(), { url: url.value.trim(), types: types.value.split(",").map((t) => t.trim()).filter(Boolean) });
      table.append(row(made));
      url.value = "";
      message.replaceChildren(h("p", {}, `Signing secret of ${made.id} (shown once; the receiver verifies webhook-signature with it): `,
        h("span", { class: "secret" }, made.secret)));
    } catch (error) { message.replaceChildren(failure(error)); }
  } }, "Add webhook");
  return [h("h3", {}, "Webhooks"), table, h("p", {}, url, " ", types, " ", add), message];
}

// ---- frame -----------------------------------------------------------------------------------------------

function chrome() {
  const signedIn = session.user !== null;
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("sign-out").hidden = !signedIn;
  document.getElementById("nav-tenants").hidden = session.role !== "admin";
  document.getElementById("who").textContent = signedIn ? `${session.user} (${session.role}${session.tenant ? ", " + session.tenant : ""})` : "";
  const select = document.getElementById("tenant-select");
  select.hidden = !(signedIn && session.role === "admin");
  select.replaceChildren(...session.tenants.map((t) => h("option", { value: t, selected: t === session.acting }, t)));
}

function route() {
  for (const stop of cleanup) stop();
  cleanup = [];
  if (session.user === null) { signInPage(); return; }
  const [page, arg] = location.hash.replace(/^#\//, "").split("/");
  for (const link of document.querySelectorAll("#nav a")) link.classList.toggle("active", link.hash === `#/${page}`);
  const pages = { overview: overviewPage, devices: devicesPage, commission: commissionPage, alarms: alarmsPage, tenants: tenantsPage };
  if (page === "device" && arg) devicePage(decodeURIComponent(arg));
  else (pages[page] || overviewPage)();
}

document.getElementById("sign-out").addEventListener("click", async () => { await signOut(); chrome(); route(); });
document.getElementById("tenant-select").addEventListener("change", (event) => { session.acting = event.target.value; route(); });
window.addEventListener("hashchange", route);
window.addEventListener("unhandledrejection", (event) => {
  if (event.reason instanceof ApiError && event.reason.status === 401) { session.user = null; chrome(); route(); }
});
loadSession().then(() => { chrome(); route(); }, (error) => show(failure(error)));

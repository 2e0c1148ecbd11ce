// The console: sign-in, the release list, a release's page and the audit page, routed by the
// URL's hash. Reads through the read routes (/v1/releases..., /v1/audit/...), acts through the
// promoter's routes (POST /v1/releases/{id}/{command}); the server decides, the page shows.

import { api, ApiFailure, clearToken, follow, setToken, token } from "./api.js";
import { drawPlan, paintStatuses, STEP_ICONS } from "./graph.js";

const RELEASE_ICONS = {
  requested: ["…", "requested"],
  planned: ["▶", "in progress"],
  held: ["⏸", "held"],
  completed: ["✓", "completed"],
  rolled_back: ["↺", "rolled back"],
  rejected: ["⛔", "refused"],
  cancelled: ["■", "cancelled"],
  denied: ["✗", "denied"],
};
const TERMINAL = new Set(["completed", "rolled_back", "rejected", "cancelled", "denied"]);
const PAGE_SIZE = 25;

let me = null; // {identity, roles}
let owners = null; // {service: team} from the catalog, loaded once per sign-in
let leave = () => {}; // stops the current view's live updates

// ---- small DOM helpers: text goes in as text -------------------------------------------------
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function badge(status) {
  const [icon, word] = RELEASE_ICONS[status] || ["?", status];
  return h("span", { class: `badge ${status}`, "data-status": status }, h("span", { "aria-hidden": "true" }, icon), " ", word);
}

function age(at) {
  const seconds = Math.max(0, Math.round((Date.now() - new Date(at).getTime()) / 1000));
  if (seconds < 60) return `${seconds}s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

function notice(message, kind = "error") {
  const box = document.getElementById("notice");
  box.textContent = message;
  box.className = kind;
  box.hidden = !message;
}

function main() {
  return document.getElementById("main");
}

function has(role) {
  return !!me && me.roles.includes(role);
}

// ---- sign-in --------------------------------------------------------------------------------
async function loadMe() {
  owners = null;
  if (!token()) { me = null; return; }
  try {
    me = await api("/v1/whoami");
  } catch (error) {
    me = null;
    if (error instanceof ApiFailure && error.status === 401) clearToken();
    throw error;
  }
}

function paintHeader() {
  document.getElementById("whoami").textContent = me ? `${me.identity} (${me.roles.join(", ")})` : "";
  document.getElementById("signout").hidden = !me;
  document.getElementById("nav-audit").hidden = !has("auditor");
  for (const link of document.querySelectorAll("nav a")) {
    const here = location.hash.startsWith(`#/${link.dataset.nav}`);
    if (here) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
}

function signInView() {
  const input = h("input", { id: "token", type: "password", autocomplete: "off", required: true, spellcheck: "false", placeholder: "ry_…" });
  const form = h("form", { id: "signin", class: "card narrow" },
    h("h1", {}, "Sign in"),
    h("p", {}, "Paste your Railyard token. It stays in this tab (session storage) and is sent only as an Authorization header; your role decides which actions you see."),
    h("label", {}, "Token ", input),
    h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary", id: "signin-submit" }, "Sign in")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    setToken(input.value.trim());
    try {
      await loadMe();
      notice("");
      const next = sessionStorage.getItem("railyard.after") || "#/releases";
      sessionStorage.removeItem("railyard.after");
      if (location.hash === next) route(); else location.hash = next;
    } catch (error) {
      clearToken();
      notice(`Sign-in failed: ${error.message}`);
    }
  });
  main().replaceChildren(form);
  input.focus();
}

// ---- releases -------------------------------------------------------------------------------
function releasesView(params) {
  const filters = ["service", "env", "status", "requester"];
  const value = (name) => params.get(name) || "";
  const statusSelect = h("select", { name: "status", id: "filter-status" }, h("option", { value: "" }, "any"),
    Object.entries(RELEASE_ICONS).map(([key, [, word]]) => h("option", { value: key, selected: value("status") === key }, word)));
  const form = h("form", { class: "filters", id: "filters" },
    h("label", {}, "Service ", h("input", { name: "service", id: "filter-service", value: value("service") })),
    h("label", {}, "Environment ", h("input", { name: "env", id: "filter-env", value: value("env") })),
    h("label", {}, "Status ", statusSelect),
    h("label", {}, "Requester ", h("input", { name: "requester", id: "filter-requester", value: value("requester") })),
    h("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    for (const name of filters) {
      const v = form.elements[name].value.trim();
      if (v) next.set(name, v);
    }
    location.hash = `#/releases?${next}`;
  });
  const body = h("tbody", { id: "release-rows" });
  const table = h("table", { class: "releases" },
    h("caption", { class: "sr" }, "Releases, newest first"),
    h("thead", {}, h("tr", {}, ["Release", "Status", "Where", "Blocked by / waits for", "Requester", "Age"].map((t) => h("th", { scope: "col" }, t)))),
    body);
  const pager = h("div", { class: "pager" });
  const live = h("span", { class: "live", id: "list-live" }, "");
  main().replaceChildren(h("h1", {}, "Releases ", live), form, table, pager);

  const cursors = [null];
  let page = 0;
  let stopped = false;
  let loading = false;
  let again = false;
  const controller = new AbortController();
  const passes = (s) => (!value("service") || s.services.includes(value("service")))
    && (!value("env") || s.envs.includes(value("env")))
    && (!value("status") || s.status === value("status"))
    && (!value("requester") || s.requested_by === value("requester"));
  async function load() {
    const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
    for (const name of filters) if (value(name)) query.set(name, value(name));
    if (cursors[page]) query.set("cursor", cursors[page]);
    try {
      const answer = await api(`/v1/releases?${query}`);
      if (stopped) return;
      cursors[page + 1] = answer.next_cursor || null;
      // Rows already shown are updated in place, so a link or the focus in one stays put.
      const shown = new Map([...body.querySelectorAll("tr[data-release]")].map((tr) => [tr.dataset.release, tr]));
      body.replaceChildren(...answer.items.map((summary) => {
        const tr = shown.get(summary.release);
        return tr ? update(tr, summary) : row(summary);
      }));
      if (!answer.items.length) body.append(h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No release matches.")));
      pager.replaceChildren(
        h("button", { type: "button", id: "page-prev", disabled: page === 0, onclick: () => { page -= 1; reload(); } }, "← Newer"),
        h("span", {}, ` page ${page + 1} `),
        h("button", { type: "button", id: "page-next", disabled: !answer.next_cursor, onclick: () => { page += 1; reload(); } }, "Older →"));
      notice("");
    } catch (error) {
      notice(error.message);
    }
  }
  /** Loads the page (server-side: filters and cursor), again if a change arrived meanwhile. */
  async function reload() {
    if (loading) { again = true; return; }
    loading = true;
    do { again = false; await load(); } while (again && !stopped);
    loading = false;
  }
  // Live by push: the server sends each release that changed (SSE id = stream sequence, so a
  // reconnect with Last-Event-ID misses nothing). A shown row is replaced in place; a release
  // new to the first page, or one that leaves the filter, loads the page again.
  follow("/v1/live/releases", {
    signal: controller.signal,
    onState: (state, why) => {
      live.textContent = state === "live" ? "· live" : `· ${state}${why ? ": " + why : ""}`;
      live.dataset.state = state;
      if (state === "failed") { notice(why); reload(); }
    },
    onEvent: ({ event, data }) => {
      if (event === "ready") { reload(); return; }
      if (event === "error") { notice(data); return; }
      if (event !== "release") return;
      if (loading) { again = true; return; }
      let changed;
      try { changed = JSON.parse(data).releases || []; } catch { return; }
      let stale = false;
      for (const summary of changed) {
        const shown = [...body.querySelectorAll("tr[data-release]")].find((tr) => tr.dataset.release === summary.release);
        if (shown && passes(summary)) update(shown, summary);
        else if (shown || (page === 0 && passes(summary))) stale = true;
      }
      if (stale) reload();
    },
  });
  // Ages are worked out here from each row's time: nothing is fetched for them.
  const ages = setInterval(() => {
    for (const cell of body.querySelectorAll("td[data-at]")) cell.textContent = age(cell.dataset.at);
  }, 15000);
  return () => { stopped = true; controller.abort(); clearInterval(ages); };
}

/** Puts `summary` into a row already shown: every cell but the first (its link) anew. */
function update(tr, summary) {
  const fresh = row(summary);
  [...tr.children].forEach((cell, i) => { if (i > 0) cell.replaceWith(fresh.children[1]); });
  return tr;
}

function row(summary) {
  const where = h("span", { class: "where" }, summary.envs.length
    ? summary.envs.map((env) => h("span", { class: `env${env === summary.current_env ? " current" : ""}` }, env))
    : "not planned yet");
  return h("tr", { "data-release": summary.release },
    h("td", {}, h("a", { href: `#/releases/${encodeURIComponent(summary.release)}` }, summary.release),
      h("div", { class: "muted" }, summary.services.join(", "))),
    h("td", {}, badge(summary.status)),
    h("td", {}, where),
    h("td", {}, summary.waiting_for || "—"),
    h("td", {}, summary.requested_by),
    h("td", { title: summary.requested_at, "data-at": summary.requested_at }, age(summary.requested_at)));
}

// ---- one release ----------------------------------------------------------------------------
function stepState(status, id) {
  const step = status && status.steps.find((s) => s.id === id);
  return step ? step.status.state : "pending";
}

const STEP_AFTER = { "step.started": "running", "step.succeeded": "succeeded", "step.rolled_back": "rolled_back" };

/**
 * What `item`, an event newer than `status`, says at once, before the status is read again:
 * a hold, a resume, the completion, a step starting, succeeding or undone. Anything else (a
 * failure, a rollback's reason, approvals, gates) waits for the status the page reads next;
 * `status` itself is left as it was.
 */
function withEvent(status, item) {
  const d = item.data || {};
  if (STEP_AFTER[item.type]) {
    const state = STEP_AFTER[item.type];
    const extra = state === "running" ? { worker: d.worker, attempt: d.attempt } : {};
    const waiting = { ...(status.waiting || {}) };
    if (state === "running") delete waiting[d.step];
    return { ...status, waiting, steps: status.steps.map((s) => (s.id === d.step ? { ...s, status: { state, ...extra } } : s)) };
  }
  if (item.type === "step.waiting" && !TERMINAL.has(status.status)) {
    return { ...status, waiting: { ...(status.waiting || {}), [d.step]: { waiting_for: d.waiting_for || [], reason: d.reason, since: item.at } } };
  }
  if (TERMINAL.has(status.status)) return status;
  switch (item.type) {
    case "release.held":
      return { ...status, status: "held", owner_to_act: null,
        hold: { reason: d.reason, step: d.step ?? null, owner: d.owner ?? null, frozen: d.frozen ?? null } };
    case "release.resumed":
      return status.status === "held" ? { ...status, status: status.steps.length ? "planned" : "requested", hold: null, owner_to_act: null } : status;
    case "release.completed":
      return { ...status, status: "completed", hold: null, owner_to_act: null };
    default:
      return status;
  }
}

function releaseView(id) {
  const controller = new AbortController();
  const head = h("div", { class: "release-head" });
  const banner = h("section", { id: "banner", class: "banner", "aria-live": "polite" });
  const actions = h("div", { id: "actions", class: "actions", role: "toolbar", "aria-label": "Actions" });
  const graphBox = h("div", { id: "graph", class: "graph" });
  const detail = h("section", { id: "detail", class: "detail card", "aria-live": "polite" }, h("p", { class: "muted" }, "Select a step or an edge to see its rule and reason."));
  const refusals = h("section", { id: "refusals" });
  const gates = h("section", { id: "gates" });
  const approvals = h("section", { id: "approvals" });
  const timeline = h("ol", { id: "timeline", class: "timeline", reversed: true });
  const liveState = h("span", { id: "live", class: "live" }, "· connecting");
  main().replaceChildren(
    h("p", {}, h("a", { href: "#/releases" }, "← Releases")),
    head, banner, actions,
    h("h2", {}, "Plan ", h("span", { class: "muted small" }, "waves left to right; ★ marks the critical path")),
    graphBox, detail, refusals, gates, approvals,
    h("h2", {}, "Timeline ", liveState), timeline);

  let status = null;
  // Events newer than the status read last (its `last_event` is a stream sequence), shown
  // at once with `withEvent` and again over each status read before it caught up with them.
  let newer = [];
  let plan = null;
  let svg = null;
  let loading = null;
  let again = false;

  async function refresh() {
    if (loading) { again = true; return loading; }
    loading = (async () => {
      do {
        again = false;
        try {
          if (!owners) owners = await api("/v1/owners").then((a) => a.owners || {}, () => ({}));
          const read = await api(`/v1/releases/${encodeURIComponent(id)}`);
          newer = newer.filter((item) => item.sequence > read.last_event);
          status = newer.reduce(withEvent, read);
          if (!plan && status.steps.length) plan = await api(`/v1/releases/${encodeURIComponent(id)}/plan`);
          if (!controller.signal.aborted) paint();
        } catch (error) {
          if (!(error instanceof ApiFailure && error.status === 404)) notice(error.message);
          else head.replaceChildren(h("h1", {}, id), h("p", {}, error.message));
        }
      } while (again && !controller.signal.aborted);
      loading = null;
    })();
    return loading;
  }

  function select(what) {
    if (what.edge) {
      const e = what.edge;
      detail.replaceChildren(h("h3", {}, `${e.to} waits for ${e.from}`),
        h("p", {}, h("strong", {}, "Rule: "), h("code", { id: "detail-rule" }, e.rule)),
        h("p", { id: "detail-reason" }, e.reason));
    } else {
      const step = status && status.steps.find((s) => s.id === what.step.id);
      const st = step ? step.status : { state: "pending" };
      const [icon, word] = STEP_ICONS[st.state] || ["?", st.state];
      const waits = step ? step.waits_for : [];
      detail.replaceChildren(h("h3", {}, what.step.id),
        h("p", {}, `${icon} ${word}`, st.detail ? ` — ${st.detail}` : "", st.worker ? ` (worker ${st.worker}, attempt ${st.attempt})` : ""),
        waits.length
          ? h("ul", { id: "detail-waits" }, waits.map((w) => h("li", {},
            h("span", { class: "muted" }, `${stepState(status, w.step) === "succeeded" ? "✓ waited" : "… waits"} for `), h("code", {}, w.step), ` (${w.rule}): `, w.reason)))
          : h("p", { class: "muted" }, "It waits for nothing."));
    }
  }

  function paint() {
    head.replaceChildren(
      h("h1", {}, `${status.release} `, h("span", { id: "release-status" }, badge(status.status))),
      h("p", { class: "muted" }, `requested by ${status.requested_by} · updated ${age(status.updated_at)} · `,
        status.changes.map((c) => `${c.service} ${c.version}`).join(", ")));
    paintBanner(banner, status);
    paintActions(actions, status, refresh);
    if (plan) {
      if (!svg) {
        svg = drawPlan(plan, (step) => stepState(status, step), select);
        graphBox.replaceChildren(svg);
      } else {
        paintStatuses(svg, (step) => stepState(status, step));
      }
    } else {
      graphBox.replaceChildren(h("p", { class: "muted" }, status.status === "rejected" ? "No plan: the planner refused this release." : "Not planned yet."));
    }
    refusals.replaceChildren(...(status.refusals.length ? [
      h("h2", {}, "Why it was refused"),
      h("ul", { class: "refusals" }, status.refusals.map((r) => h("li", {},
        h("p", {}, h("strong", {}, `${r.rule}${r.env ? " in " + r.env : ""}: `), h("span", { class: "reason" }, r.reason)),
        h("p", { class: "remedy" }, h("strong", {}, "Remedy: "), r.remedy)))),
    ] : []));
    gates.replaceChildren(...(status.gates.length ? [
      h("h2", {}, "Gate observations"),
      h("table", { class: "gates" },
        h("thead", {}, h("tr", {}, ["Step", "Gate", "Result", "Observed", "Expected"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, status.gates.map((g) => h("tr", { class: g.passed ? "passed" : "failed" },
          h("td", {}, g.step), h("td", {}, g.gate), h("td", {}, g.passed ? "✓ passed" : "✗ failed"),
          h("td", {}, g.observed), h("td", {}, g.expected))))),
    ] : []));
    approvals.replaceChildren(...(status.approvals.length ? [
      h("h2", {}, "Approvals"),
      h("ul", {}, status.approvals.map((a) => h("li", { "data-approval": a.state },
        `${a.step}: ${a.state}`,
        (a.approvers || []).length ? ` — from ${a.approvers.join(", ")}` : "",
        a.by ? ` by ${a.by}` : "", a.comment ? `: “${a.comment}”` : "",
        a.at ? ` (${new Date(a.at).toLocaleString()})` : ""))),
    ] : []));
  }

  refresh();
  follow(`/v1/releases/${encodeURIComponent(id)}/events`, {
    signal: controller.signal,
    onState: (state, why) => { liveState.textContent = state === "live" ? "· live" : `· ${state}${why ? ": " + why : ""}`; liveState.dataset.state = state; },
    onEvent: ({ event, data }) => {
      if (event === "error") { notice(data); return; }
      let item;
      try { item = JSON.parse(data); } catch { return; }
      // A reconnect in the middle of an append sends the rest of it again: shown once.
      if (timeline.querySelector(`li[data-n="${item.n}"]`)) return;
      timeline.prepend(h("li", { "data-n": item.n, "data-type": item.type },
        h("time", { datetime: item.at }, new Date(item.at).toLocaleTimeString()), " ",
        h("code", {}, item.type), " ", h("span", { class: "muted" }, item.actor), " — ", item.summary));
      // What the event says shows now; the status read next brings the rest.
      if (status && item.sequence > status.last_event) {
        newer.push(item);
        const next = withEvent(status, item);
        if (next !== status) { status = next; paint(); }
      }
      refresh();
    },
  });
  return () => controller.abort();
}

function paintBanner(banner, status) {
  const lines = [];
  let kind = "info";
  const who = status.owner_to_act;
  switch (status.status) {
    case "requested": lines.push("Waits for the planner."); break;
    case "planned": {
      const asked = status.approvals.find((a) => a.state === "requested");
      if (asked) {
        kind = "act";
        lines.push(`Waits for approval of ${asked.step} from ${(asked.approvers || []).join(", ") || "an approver"}.`);
      } else {
        const running = status.steps.filter((s) => s.status.state === "running").map((s) => s.id);
        lines.push(running.length ? `In progress: ${running.join(", ")}.` : "In progress.");
      }
      for (const [step, wait] of Object.entries(status.waiting || {})) {
        lines.push(`${step} waits for ${(wait.waiting_for || []).join(", ")} to finish first (requested earlier, same services): ${wait.reason}.`);
      }
      break;
    }
    case "held": {
      kind = "act";
      const hold = status.hold || {};
      lines.push(hold.frozen
        ? `Frozen: ${hold.frozen} is in a freeze window — ${hold.reason}.`
        : `Held${hold.owner ? " by " + hold.owner : ""}${hold.step ? " at " + hold.step : ""}: “${hold.reason}”.`);
      break;
    }
    case "completed": kind = "done"; lines.push("Completed: every step succeeded."); break;
    case "rolled_back": {
      kind = "bad";
      lines.push(`Rolled back: ${status.ended_because || "no reason recorded"}.`);
      const failed = status.gates.filter((g) => !g.passed);
      for (const g of failed) lines.push(`Gate failed at ${g.step}: ${g.gate} observed ${g.observed}, expected ${g.expected}.`);
      break;
    }
    case "rejected": kind = "bad"; lines.push(`Refused by the planner for ${status.refusals.length} reason${status.refusals.length === 1 ? "" : "s"}; each is listed below with its remedy.`); break;
    case "cancelled": lines.push(`Cancelled: ${status.ended_because || "no reason recorded"}.`); break;
    case "denied": kind = "bad"; lines.push(`Denied: ${status.ended_because || "an approver denied it"}.`); break;
    default: lines.push(status.status);
  }
  if (who && !TERMINAL.has(status.status)) lines.push(`Who must act: ${who.who} — ${who.why}.`);
  const teams = ownerTeams(status);
  banner.className = `banner ${kind}`;
  banner.dataset.status = status.status;
  banner.replaceChildren(...lines.map((line) => h("p", {}, line)),
    teams.length ? h("p", { id: "banner-owner" }, `Owner team${teams.length === 1 ? "" : "s"} (catalog): `,
      teams.map(([team, services]) => `${team} (${services.join(", ")})`).join("; "), ".") : "");
}

/** The service a step acts on: its target, or for a migration the change that brings it. */
function serviceOf(status, stepId) {
  const step = status.steps.find((s) => s.id === stepId);
  if (!step) return null;
  if (owners && owners[step.target]) return step.target;
  const bringer = status.changes.find((c) => (c.migrations || []).some((m) => m.database === step.target));
  return bringer ? bringer.service : null;
}

/**
 * The owning teams ([team, services]) of what stopped the release — a held step or a failed
 * gate or step; the release's services when nothing narrower is known — for a hold, a failed
 * gate and a rollback; none otherwise.
 */
function ownerTeams(status) {
  if (!owners) return [];
  const failedGates = status.gates.filter((g) => !g.passed).map((g) => g.step);
  const failedSteps = status.steps.filter((s) => s.status.state === "failed").map((s) => s.id);
  let steps;
  if (status.status === "held") steps = [status.hold && status.hold.step, ...failedGates, ...failedSteps].filter(Boolean);
  else if (status.status === "rolled_back" || failedGates.length) steps = [...failedGates, ...failedSteps];
  else return [];
  let services = [...new Set(steps.map((step) => serviceOf(status, step)).filter(Boolean))];
  if (!services.length) services = status.changes.map((c) => c.service);
  const teams = new Map();
  for (const service of services) {
    const team = owners[service];
    if (!team) continue;
    if (!teams.has(team)) teams.set(team, []);
    teams.get(team).push(service);
  }
  return [...teams];
}

const ACTIONS = [
  // name, role, label, when (status) -> bool
  ["approve", "approver", "Approve", (s) => s.approvals.some((a) => a.state === "requested")],
  ["deny", "approver", "Deny", (s) => s.approvals.some((a) => a.state === "requested")],
  ["hold", "operator", "Hold", (s) => s.status === "planned"],
  ["resume", "operator", "Resume", (s) => s.status === "held"],
  ["retry", "operator", "Retry", (s) => s.status === "held" && s.steps.some((x) => x.status.state === "failed")],
  ["rollback", "operator", "Roll back", (s) => s.status === "planned" || s.status === "held"],
  ["cancel", "operator", "Cancel", (s) => s.status === "requested" || s.status === "planned" || s.status === "held"],
];

const newest = new WeakMap(); // an actions bar -> the status its buttons act on

/** The buttons the role may press now; the same buttons stay (and keep focus) as events arrive. */
function paintActions(box, status, refresh) {
  newest.set(box, status);
  const allowed = ACTIONS.filter(([, role, , when]) => has(role) && when(status));
  const shown = [...box.children].map((button) => button.dataset.action).join(" ");
  if (shown === allowed.map(([name]) => name).join(" ")) return;
  const buttons = allowed.map(([name, , label]) => h("button", { type: "button", "data-action": name, class: name === "approve" ? "primary" : "", onclick: () => act(name, label, newest.get(box), refresh) }, label));
  const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.action : null;
  box.replaceChildren(...buttons);
  if (focused) { const again = box.querySelector(`[data-action="${focused}"]`); if (again) again.focus(); }
}

function options(select, values, chosen) {
  select.replaceChildren(...values.map((v) => h("option", { value: v, selected: v === chosen }, v || "—")));
}

/** Asks for confirmation (reason, environment, step, freeze override as the action takes). */
function act(name, label, status, refresh) {
  const dialog = document.getElementById("confirm");
  const envs = [...new Set(status.steps.map((s) => s.env))];
  const asked = status.approvals.filter((a) => a.state === "requested").map((a) => a.step);
  const failed = status.steps.filter((s) => s.status.state === "failed").map((s) => s.id);
  const stepChoices = name === "approve" || name === "deny" ? asked : name === "retry" ? failed : [];
  document.getElementById("confirm-title").textContent = `${label} ${status.release}?`;
  document.getElementById("confirm-text").textContent = {
    approve: "Your approval is recorded with your identity and counts only if the environment lists you as an approver.",
    deny: "Denying ends the release.", hold: "The release stops before its next step until an operator resumes it.",
    resume: "The release continues from where it stopped.", retry: "The failed step runs again.",
    rollback: "Every completed step is undone, in reverse order.", cancel: "The release ends; nothing more runs.",
  }[name];
  options(document.getElementById("confirm-step"), stepChoices, stepChoices[0]);
  document.getElementById("confirm-step-label").hidden = stepChoices.length === 0;
  const envChoices = name === "approve" || name === "deny" || name === "rollback" ? ["", ...envs] : [];
  options(document.getElementById("confirm-env"), envChoices, "");
  document.getElementById("confirm-env-label").hidden = envChoices.length === 0;
  const override = document.getElementById("confirm-override");
  override.checked = false;
  document.getElementById("confirm-override-label").hidden = !(name === "approve" && status.hold && status.hold.frozen);
  const reason = document.getElementById("confirm-reason");
  reason.value = "";
  reason.required = name === "hold" || name === "deny";
  dialog.dataset.action = name;
  dialog.returnValue = "";
  dialog.showModal();
  reason.focus();
  dialog.onclose = async () => {
    if (dialog.returnValue !== "ok") return;
    const body = {};
    const step = document.getElementById("confirm-step").value;
    const env = document.getElementById("confirm-env").value;
    if (stepChoices.length && step) body.step = step;
    if (envChoices.length && env) body.env = env;
    if (reason.value.trim()) body.comment = reason.value.trim();
    if (override.checked) { body.override_freeze = true; body.env = body.env || status.hold.frozen; }
    try {
      const answer = await api(`/v1/releases/${encodeURIComponent(status.release)}/${name}`, { method: "POST", body });
      notice(`${label}: ${answer.detail}`, "ok");
    } catch (error) {
      notice(`${label} refused: ${error.message}`);
    }
    refresh();
  };
}

// ---- audit ----------------------------------------------------------------------------------
const QUERIES = ["approvals", "gates", "changes", "actor", "rejections", "report", "dora", "events"];

function auditView(params) {
  const form = h("form", { class: "filters", id: "audit-form" },
    h("label", {}, "Query ", h("select", { name: "query", id: "audit-query" }, QUERIES.map((q) => h("option", { value: q, selected: params.get("query") === q }, q)))),
    ["release", "service", "env", "actor", "since", "until"].map((name) =>
      h("label", {}, `${name} `, h("input", { name, value: params.get(name) || "", placeholder: name === "since" || name === "until" ? "2026-01-31T00:00:00Z" : "" }))),
    h("button", { type: "submit", class: "primary" }, "Run"));
  const result = h("div", { id: "audit-result" });
  const exports = h("div", { class: "buttons", id: "audit-exports" });
  const verify = h("div", { id: "verify" });
  main().replaceChildren(h("h1", {}, "Audit"), form, exports, result,
    h("h2", {}, "Verify and export the whole record"),
    h("div", { class: "buttons" },
      h("button", { type: "button", id: "verify-run", onclick: runVerify }, "Run audit verify"),
      h("button", { type: "button", id: "export-all", onclick: () => download("/v1/audit/export", "railyard-audit.jsonl") }, "Export the record (JSON lines, sealed)")),
    verify);

  function query() {
    const q = new URLSearchParams();
    for (const el of form.elements) if (el.name && el.name !== "query" && el.value.trim()) q.set(el.name, el.value.trim());
    return q;
  }
  async function run(event) {
    if (event) event.preventDefault();
    const name = form.elements.query.value;
    const q = query();
    try {
      const answer = await api(`/v1/audit/${name}?${q}`);
      const items = answer.items || [];
      const columns = [...new Set(items.flatMap((item) => Object.keys(item)))].filter((c) => c !== "data");
      result.replaceChildren(h("p", {}, `${items.length} item${items.length === 1 ? "" : "s"}${answer.next_cursor ? " (more: narrow the filters or export)" : ""}`),
        h("div", { class: "scroll" }, h("table", { class: "audit" },
          h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", {}, items.map((item) => h("tr", {}, columns.map((c) => h("td", {}, typeof item[c] === "object" && item[c] !== null ? JSON.stringify(item[c]) : item[c] ?? ""))))))));
      const csv = new URLSearchParams(q); csv.set("format", "csv");
      exports.replaceChildren(
        h("button", { type: "button", id: "export-csv", onclick: () => download(`/v1/audit/${name}?${csv}`, `railyard-${name}.csv`) }, "Download CSV"),
        h("button", { type: "button", id: "export-json", onclick: () => download(`/v1/audit/${name}?${q}`, `railyard-${name}.json`) }, "Download JSON"));
      notice("");
    } catch (error) {
      result.replaceChildren();
      notice(error.message);
    }
  }
  async function runVerify() {
    verify.replaceChildren(h("p", { class: "muted" }, "verifying…"));
    try {
      const report = await api("/v1/audit/verify", { method: "POST" });
      verify.replaceChildren(h("p", { id: "verify-result", "data-ok": String(report.ok) }, report.ok ? "✓ the audit chain verifies" : "✗ the audit chain does not verify"),
        h("pre", {}, JSON.stringify(report, null, 2)));
    } catch (error) {
      verify.replaceChildren(h("p", {}, `✗ ${error.message}`));
    }
  }
  form.addEventListener("submit", run);
  run();
  return () => {};
}

/** Downloads a route's answer with the token in a header (a plain link could not carry it). */
async function download(path, name) {
  try {
    const response = await api(path, { raw: true });
    const blob = await response.blob();
    const url = URL.createObjectURL(blob);
    const link = h("a", { href: url, download: name });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (error) {
    notice(error.message);
  }
}


// ---- estate and contract map ----------------------------------------------------------------
/** Whether version `v` (an integer) is in `range` ("1..=2", "2..4", ">=5", "<3", "3"). */
function inRange(v, range) {
  const text = String(range).replace(/\s+/g, "");
  let m;
  if ((m = text.match(/^(\d+)\.\.=(\d+)$/))) return v >= +m[1] && v <= +m[2];
  if ((m = text.match(/^(\d+)\.\.(\d+)$/))) return v >= +m[1] && v < +m[2];
  if ((m = text.match(/^(>=|<=|>|<|=)?(\d+)$/))) {
    const n = +m[2];
    return { ">=": v >= n, "<=": v <= n, ">": v > n, "<": v < n, "=": v === n, undefined: v === n }[m[1]];
  }
  return null; // a range this page does not read: shown as is
}

/** Whether a consumer reading `range` reads what every producer emits (null: cannot tell). */
function readsAll(producers, range) {
  const answers = producers.map(([, v]) => inRange(+v, range));
  if (!answers.length || answers.every((a) => a === null)) return null;
  return answers.every((a) => a !== false);
}

function mark(ok) {
  return ok === null ? "" : ok ? " ✓" : " ✗";
}

function estateView() {
  const box = h("div", { id: "estate" }, h("p", { class: "muted" }, "loading…"));
  main().replaceChildren(h("h1", {}, "Estate"),
    h("p", { class: "muted" }, "What runs where, with the contract versions each service speaks — the picture the planner decides from. ✓ reads / works with it, ✗ does not."),
    box);
  let stopped = false;
  (async () => {
    try {
      const answer = await api("/v1/estate");
      if (stopped) return;
      const envs = Object.entries(answer.inventory);
      if (!envs.length) { box.replaceChildren(h("p", {}, "Nothing recorded yet: `railyard inventory import` records what runs now.")); return; }
      box.replaceChildren(...envs.map(([env, inv]) => estateOfEnv(env, inv)));
    } catch (error) {
      box.replaceChildren();
      notice(error.message);
    }
  })();
  return () => { stopped = true; };
}

function pairs(map) {
  return Object.entries(map || {}).map(([k, v]) => `${k} ${v}`).join(", ");
}

function estateOfEnv(env, inv) {
  const services = Object.entries(inv.services || {});
  const queues = new Map();
  const apis = new Map();
  const dbs = new Map(Object.entries(inv.databases || {}).map(([db, v]) => [db, { version: v, users: [] }]));
  const entry = (map, key) => { if (!map.has(key)) map.set(key, { producers: [], consumers: [] }); return map.get(key); };
  for (const [name, s] of services) {
    for (const [q, v] of Object.entries(s.produces || {})) entry(queues, q).producers.push([name, v]);
    for (const [q, r] of Object.entries(s.consumes || {})) entry(queues, q).consumers.push([name, r]);
    for (const [a, r] of Object.entries(s.provides || {})) entry(apis, a).producers.push([name, r]);
    for (const [a, r] of Object.entries(s.requires || {})) entry(apis, a).consumers.push([name, r]);
    for (const [d, r] of Object.entries(s.schema || {})) {
      if (!dbs.has(d)) dbs.set(d, { version: null, users: [] });
      dbs.get(d).users.push([name, r]);
    }
  }
  const table = (head, rows) => h("div", { class: "scroll" }, h("table", {},
    h("thead", {}, h("tr", {}, head.map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows)));
  return h("section", { class: "card env-estate", "data-env": env },
    h("h2", {}, env),
    table(["Service", "Version", "Commit", "Produces", "Consumes", "Provides", "Requires", "Schema"],
      services.map(([name, s]) => h("tr", { "data-service": name },
        h("td", {}, name), h("td", {}, s.version), h("td", {}, h("code", {}, s.commit || "—")),
        h("td", {}, pairs(s.produces)), h("td", {}, pairs(s.consumes)), h("td", {}, pairs(s.provides)),
        h("td", {}, pairs(s.requires)), h("td", {}, pairs(s.schema))))),
    h("h3", {}, "Queues"),
    queues.size ? table(["Queue", "Producers (version emitted)", "Consumers (versions read)"],
      [...queues].map(([q, { producers, consumers }]) => h("tr", { "data-queue": q },
        h("td", {}, q),
        h("td", {}, producers.map(([n, v]) => `${n}: v${v}`).join(", ") || "—"),
        h("td", {}, consumers.map(([n, r]) => `${n}: ${r}${mark(readsAll(producers, r))}`).join(", ") || "—"))))
      : h("p", { class: "muted" }, "No queue."),
    h("h3", {}, "APIs"),
    apis.size ? table(["API", "Providers (versions served)", "Callers (versions required)"],
      [...apis].map(([a, { producers, consumers }]) => h("tr", { "data-api": a },
        h("td", {}, a),
        h("td", {}, producers.map(([n, r]) => `${n}: ${r}`).join(", ") || "—"),
        h("td", {}, consumers.map(([n, r]) => `${n}: ${r}`).join(", ") || "—"))))
      : h("p", { class: "muted" }, "No API."),
    h("h3", {}, "Databases"),
    dbs.size ? table(["Database", "Schema", "Services (schemas they work with)"],
      [...dbs].map(([d, { version, users }]) => h("tr", { "data-database": d },
        h("td", {}, d), h("td", {}, version === null ? "unknown" : String(version)),
        h("td", {}, users.map(([n, r]) => `${n}: ${r}${version === null ? "" : mark(inRange(+version, r))}`).join(", ") || "—"))))
      : h("p", { class: "muted" }, "No database."));
}

// ---- plan preview ---------------------------------------------------------------------------
const EXAMPLE = `id = "orders-v5"
[[changes]]
service = "orders-api"
version = "2.6.0"
produces = { orders-events = 3 }`;

function previewView() {
  const text = h("textarea", { id: "preview-text", rows: 14, spellcheck: "false", autocomplete: "off", placeholder: EXAMPLE });
  const upload = h("input", { type: "file", id: "preview-file", accept: ".toml,.json,application/json,application/toml,text/plain" });
  upload.addEventListener("change", async () => {
    const file = upload.files[0];
    if (file) text.value = await file.text();
  });
  const form = h("form", { id: "preview-form", class: "card" },
    h("label", { class: "block" }, "Release file (release.toml, or its JSON form)", text),
    h("div", { class: "buttons" },
      h("label", {}, "or upload one ", upload),
      h("button", { type: "submit", class: "primary", id: "preview-run" }, "Preview the plan")));
  const result = h("section", { id: "preview-result", "aria-live": "polite" });
  main().replaceChildren(h("h1", {}, "Plan preview"),
    h("p", { class: "muted" }, "The plan the planner would make now — against what runs in each environment and the releases in flight — or every reason it would refuse, with its remedy. Nothing is submitted or recorded."),
    form, result);
  let stopped = false;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    result.replaceChildren(h("p", { class: "muted" }, "planning…"));
    try {
      const answer = await api("/v1/plan/preview", {
        method: "POST", text: text.value,
        contentType: text.value.trim().startsWith("{") ? "application/json" : "application/toml",
      });
      if (stopped) return;
      notice("");
      paintPreview(result, answer);
    } catch (error) {
      if (stopped) return;
      const body = error.body && typeof error.body === "object" ? error.body : {};
      const where = [body.path, body.line ? `line ${body.line}${body.column ? ", column " + body.column : ""}` : ""].filter(Boolean).join(", ");
      result.replaceChildren(h("div", { id: "preview-error", class: "banner bad", "data-path": body.path || "" },
        h("p", {}, `✗ ${error.message}`),
        where ? h("p", {}, h("strong", {}, "Where: "), where) : ""));
      if (body.line) selectLine(text, body.line);
    }
  });
  text.focus();
  return () => { stopped = true; };
}

/** Selects line `line` (1-based) of a textarea, so a parse error points at it. */
function selectLine(area, line) {
  const lines = area.value.split("\n");
  const start = lines.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0);
  area.focus();
  area.setSelectionRange(start, start + (lines[line - 1] || "").length);
}

function paintPreview(result, answer) {
  const against = answer.against || {};
  const flights = against.in_flight || [];
  const basis = `against what runs now (the inventory as of audit record ${against.inventory_record}) and ${flights.length ? `${flights.length} release${flights.length === 1 ? "" : "s"} in flight: ${flights.join(", ")}` : "no release in flight"}`;
  const warnings = (answer.warnings || []).map((w) => h("p", { class: "warning" }, `⚠ ${w}`));
  if (answer.outcome === "refused") {
    const refusals = answer.refusals || [];
    result.replaceChildren(
      h("div", { class: "banner bad", id: "preview-outcome", "data-outcome": "refused" },
        h("p", {}, `⛔ ${answer.release} would be refused for ${refusals.length} reason${refusals.length === 1 ? "" : "s"}, ${basis}. Each is listed with its remedy.`), warnings),
      h("ul", { class: "refusals", id: "preview-refusals" }, refusals.map((r) => h("li", {},
        h("p", {}, h("strong", {}, `${r.rule}${r.env ? " in " + r.env : ""}: `), h("span", { class: "reason" }, r.reason)),
        h("p", { class: "remedy" }, h("strong", {}, "Remedy: "), r.remedy)))));
    return;
  }
  const plan = answer.plan;
  const detail = h("section", { class: "detail card", id: "preview-detail", "aria-live": "polite" }, h("p", { class: "muted" }, "Select a step or an edge to see its rule and reason."));
  const envOf = new Map(plan.steps.map((s) => [s.id, s.env]));
  const envs = [...new Set(plan.steps.map((s) => s.env))];
  const select = (what) => {
    if (what.edge) {
      const e = what.edge;
      detail.replaceChildren(h("h3", {}, `${e.to} waits for ${e.from}`),
        h("p", {}, h("strong", {}, "Rule: "), h("code", {}, e.rule)), h("p", {}, e.reason));
    } else {
      const waits = plan.edges.filter((e) => e.to === what.step.id);
      detail.replaceChildren(h("h3", {}, what.step.id),
        waits.length ? h("ul", {}, waits.map((e) => h("li", {}, "waits for ", h("code", {}, e.from), ` (${e.rule}): `, e.reason)))
          : h("p", { class: "muted" }, "It waits for nothing in this release."));
    }
  };
  const graph = h("div", { class: "graph", id: "preview-graph" }, drawPlan(plan, () => "pending", select));
  const external = plan.external_edges || [];
  const pnr = plan.points_of_no_return || [];
  result.replaceChildren(
    h("div", { class: "banner done", id: "preview-outcome", "data-outcome": "planned" },
      h("p", {}, `✓ ${answer.release} would be planned: ${plan.steps.length} steps in ${plan.waves.length} waves, ${basis}.`), warnings),
    h("h2", {}, "Plan ", h("span", { class: "muted small" }, "waves left to right; ★ marks the critical path")),
    graph, detail,
    h("h2", {}, "Why each step waits, per environment"),
    h("div", { id: "preview-edges" }, envs.map((env) => {
      const edges = plan.edges.filter((e) => envOf.get(e.to) === env);
      return h("section", { class: "card env-edges", "data-env": env }, h("h3", {}, env),
        edges.length ? h("ul", {}, edges.map((e) => h("li", { "data-rule": e.rule },
          h("code", {}, e.to), " waits for ", h("code", {}, e.from), " ", h("span", { class: "muted" }, `(${e.rule})`), ": ", e.reason)))
          : h("p", { class: "muted" }, "No ordering inside this environment: its steps follow the environment before."));
    })),
    ...(external.length ? [h("h2", {}, "Waits for other releases"), h("ul", { id: "preview-external" }, external.map((e) => h("li", {},
      h("code", {}, e.to), ` waits for ${e.release}'s `, h("code", {}, e.from), ` (${e.rule}): `, e.reason)))] : []),
    ...(pnr.length ? [h("h2", {}, "Points of no return"), h("ul", {}, pnr.map((p) => h("li", {}, h("code", {}, p.step), ": ", p.reason)))] : []));
}

// ---- routing --------------------------------------------------------------------------------
async function route() {
  leave();
  leave = () => {};
  notice("");
  const hash = location.hash || "#/releases";
  const [path, search] = hash.slice(1).split("?");
  const params = new URLSearchParams(search || "");
  if (path.startsWith("/signin")) {
    // Signing in (again) replaces whoever was signed in in this tab.
    clearToken();
    me = null;
  }
  if (!me && token()) {
    try { await loadMe(); } catch (error) { notice(error.message); }
  }
  paintHeader();
  if (!me) {
    if (!path.startsWith("/signin")) sessionStorage.setItem("railyard.after", hash);
    signInView();
    return;
  }
  const parts = path.split("/").filter(Boolean);
  if (parts[0] === "releases" && parts[1]) leave = releaseView(decodeURIComponent(parts[1]));
  else if (parts[0] === "audit") leave = auditView(params);
  else if (parts[0] === "estate") leave = estateView();
  else if (parts[0] === "preview") leave = previewView();
  else leave = releasesView(params);
  main().focus({ preventScroll: true });
}

document.getElementById("signout").addEventListener("click", () => {
  clearToken();
  me = null;
  notice("");
  if (location.hash === "#/signin") route(); else location.hash = "#/signin";
});
document.getElementById("confirm-cancel").addEventListener("click", () => document.getElementById("confirm").close("cancel"));
window.addEventListener("hashchange", route);
// A link from Slack or GitHub (`<console>/releases/<id>`) opens that release's page.
const linked = location.pathname.match(/^\/releases\/([^/]+)$/);
if (linked && !location.hash) history.replaceState(null, "", `/#/releases/${linked[1]}`);
route();

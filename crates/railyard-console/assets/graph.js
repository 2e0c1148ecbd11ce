// The plan as an SVG graph: one column per wave, left to right; edges from the plan (each with
// its rule and reason); the critical path drawn thicker and marked ★. Nodes and edges are
// focusable and answer Enter/Space as a click. Every text goes in as text, never as markup.

const SVG = "http://www.w3.org/2000/svg";
const NODE_W = 230;
const NODE_H = 50;
const COL_GAP = 70;
const ROW_GAP = 18;
const TOP = 34;
const LEFT = 12;

export const STEP_ICONS = {
  pending: ["○", "pending"],
  running: ["◐", "running"],
  succeeded: ["✓", "succeeded"],
  failed: ["✗", "failed"],
  rolled_back: ["↺", "rolled back"],
};

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function activate(node, handler) {
  node.setAttribute("tabindex", "0");
  node.addEventListener("click", handler);
  node.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      handler();
    }
  });
}

function shorten(text, max) {
  return text.length > max ? text.slice(0, max - 1) + "…" : text;
}

/**
 * Draws `plan` ({steps, edges, waves, critical_path}) into a new <svg>; `statusOf(stepId)`
 * gives a step's state name; `onSelect({step} | {edge})` hears clicks.
 */
export function drawPlan(plan, statusOf, onSelect) {
  const position = new Map();
  const waves = plan.waves && plan.waves.length ? plan.waves : [plan.steps.map((s) => s.id)];
  let rows = 0;
  waves.forEach((wave, col) => {
    wave.forEach((id, row) => {
      position.set(id, { x: LEFT + col * (NODE_W + COL_GAP), y: TOP + row * (NODE_H + ROW_GAP) });
    });
    rows = Math.max(rows, wave.length);
  });
  const width = LEFT * 2 + waves.length * NODE_W + (waves.length - 1) * COL_GAP;
  const height = TOP + rows * (NODE_H + ROW_GAP) + 10;
  const svg = el("svg", {
    viewBox: `0 0 ${width} ${height}`, width, height, class: "plan",
    role: "group", "aria-label": `plan: ${plan.steps.length} steps in ${waves.length} waves, left to right`,
  });
  const defs = el("defs");
  const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
  marker.append(el("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }));
  defs.append(marker);
  svg.append(defs);

  waves.forEach((wave, col) => {
    const envs = [...new Set(wave.map((id) => id.split(":")[0]))].join(", ");
    svg.append(el("text", { x: LEFT + col * (NODE_W + COL_GAP), y: 18, class: "wave-label" }, `wave ${col + 1} · ${envs}`));
  });

  const critical = plan.critical_path || [];
  const onCritical = new Set(critical);
  const criticalEdges = new Set(critical.slice(1).map((to, i) => `${critical[i]}→${to}`));

  const edges = el("g", { class: "edges" });
  for (const edge of plan.edges) {
    const from = position.get(edge.from);
    const to = position.get(edge.to);
    if (!from || !to) continue;
    const x1 = from.x + NODE_W, y1 = from.y + NODE_H / 2;
    const x2 = to.x, y2 = to.y + NODE_H / 2;
    const mid = (x1 + x2) / 2;
    const d = x2 > x1
      ? `M ${x1} ${y1} C ${mid} ${y1}, ${mid} ${y2}, ${x2} ${y2}`
      : `M ${x1} ${y1} C ${x1 + 40} ${y1 - 40}, ${x2 - 40} ${y2 - 40}, ${x2} ${y2}`;
    const isCritical = criticalEdges.has(`${edge.from}→${edge.to}`);
    const g = el("g", {
      class: `edge${isCritical ? " critical" : ""}`, role: "button",
      "data-from": edge.from, "data-to": edge.to,
      "aria-label": `${edge.to} waits for ${edge.from} (${edge.rule}): ${edge.reason}`,
    });
    g.append(el("title", {}, `${edge.rule}: ${edge.reason}`));
    g.append(el("path", { d, class: "hit" }));
    g.append(el("path", { d, class: "line", "marker-end": "url(#arrow)" }));
    activate(g, () => onSelect({ edge }));
    edges.append(g);
  }
  svg.append(edges);

  for (const step of plan.steps) {
    const at = position.get(step.id);
    if (!at) continue;
    const state = statusOf(step.id) || "pending";
    const [icon, word] = STEP_ICONS[state] || ["?", state];
    const isCritical = onCritical.has(step.id);
    const g = el("g", {
      class: `node ${state}${isCritical ? " critical" : ""}`, role: "button",
      transform: `translate(${at.x} ${at.y})`,
      "data-step": step.id, "data-status": state,
      "aria-label": `${step.id}: ${word}${isCritical ? ", on the critical path" : ""}`,
    });
    g.append(el("title", {}, `${step.id} — ${word}`));
    g.append(el("rect", { width: NODE_W, height: NODE_H, rx: 7 }));
    const what = `${step.action} ${step.target}${step.version ? " " + step.version : ""}`;
    g.append(el("text", { x: 10, y: 20, class: "what" }, shorten(what, 30)));
    g.append(el("text", { x: 10, y: 40, class: "state" }, `${icon} ${word}${isCritical ? "  ★ critical" : ""}`));
    activate(g, () => onSelect({ step }));
    svg.append(g);
  }
  return svg;
}

/** Updates the nodes of a drawn plan in place (no redraw, focus kept). */
export function paintStatuses(svg, statusOf) {
  for (const g of svg.querySelectorAll("g.node")) {
    const id = g.getAttribute("data-step");
    const state = statusOf(id) || "pending";
    if (g.getAttribute("data-status") === state) continue;
    const [icon, word] = STEP_ICONS[state] || ["?", state];
    const isCritical = g.classList.contains("critical");
    g.setAttribute("data-status", state);
    g.setAttribute("class", `node ${state}${isCritical ? " critical" : ""}`);
    g.setAttribute("aria-label", `${id}: ${word}${isCritical ? ", on the critical path" : ""}`);
    g.querySelector("title").textContent = `${id} — ${word}`;
    g.querySelector("text.state").textContent = `${icon} ${word}${isCritical ? "  ★ critical" : ""}`;
  }
}

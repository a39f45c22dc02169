// baton_nb DAG view. One renderer for the live widget (anywidget) and the saved snapshot.
//
// The model carries plain JSON made by baton_nb/widget/_state.py:
//   graph  [{id, k: step|group|child, p: parent, d: deps, m: model, i: item, mx: max attempts}]
//   nodes  {id: {s: state, a: attempt, t0, t1, ti, to, c: cost, u, n: calls, rp, l: latency, e, r}}
//   patch  nodes changed since `nodes` was last sent in full (applied on top of it)
//   header {wf, id, status, t0, t1, now, cost, unpriced, ti, to, failed, cancellable, cancelling}
// Layout, aggregation and formatting live here and only here.

const DENSE_LIMIT = 40; // a column with more steps is drawn as a grid of cells
const CARD_W = 216;
const GROUP_W = 300;
const CARD_H = 68;
const GAP_X = 56;
const GAP_Y = 12;
const PAD = 18;
const CELL = 10;
const CELL_GAP = 2;
const ROW_H = 22;
const GROUP_ROWS = 8; // visible child rows in an expanded group (then it scrolls)
const AUTO_EXPAND = 8; // multi-model groups up to this size start expanded
const CANCEL_FALLBACK_MS = 2500;

const TERMINAL = new Set(["completed", "discarded", "cancelled"]);
const FAILED = new Set(["discarded", "cancelled"]);
const ORDER = ["completed", "executing", "retryable", "snoozed", "discarded", "cancelled", "pending"];
const LABEL = {
  pending: "pending",
  executing: "running",
  snoozed: "snoozed",
  retryable: "retrying",
  completed: "completed",
  discarded: "failed",
  cancelled: "cancelled",
};
const GLYPH = {
  snoozed: "z",
  retryable: "↻",
  completed: "✓",
  discarded: "✕",
  cancelled: "–",
};

// ── small helpers ────────────────────────────────────────────────────────────

function h(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  return node;
}

function setText(node, text) {
  const value = text === undefined || text === null ? "" : String(text);
  if (node.textContent !== value) node.textContent = value;
}

function setClass(node, cls) {
  if (node.className !== cls) node.className = cls;
}

export function fmtSeconds(s) {
  if (s === null || s === undefined || !isFinite(s)) return "";
  if (s < 0) s = 0;
  if (s < 10) return `${s.toFixed(1)}s`;
  if (s < 60) return `${Math.round(s)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(Math.round(s % 60)).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}

export function fmtTokens(n) {
  if (!n) return "0";
  if (n < 1000) return String(n);
  if (n < 1e6) return `${(n / 1000).toFixed(n < 1e4 ? 1 : 0)}k`;
  return `${(n / 1e6).toFixed(1)}M`;
}

export function fmtCost(value) {
  if (value === null || value === undefined) return "";
  const n = Number(value);
  if (!isFinite(n)) return `$${value}`;
  if (n === 0) return "$0";
  if (n >= 100) return `$${n.toFixed(0)}`;
  if (n >= 1) return `$${n.toFixed(2)}`;
  if (n >= 0.01) return `$${n.toFixed(4)}`;
  let digits = 2 - Math.floor(Math.log10(n));
  digits = Math.min(Math.max(digits, 4), 10);
  return `$${n.toFixed(digits)}`;
}

function addCost(a, b) {
  // Costs are decimal strings; summing a few in floating point is fine for display.
  if (b === null || b === undefined) return a;
  return (a || 0) + Number(b);
}

function shortModel(model) {
  if (!model) return "";
  const slash = model.indexOf("/");
  return slash >= 0 ? model.slice(slash + 1) : model;
}

function childLabel(entry) {
  if (entry.m) return shortModel(entry.m);
  const open = entry.id.lastIndexOf("[");
  return open >= 0 ? entry.id.slice(open) : entry.id;
}

// ── layout: topological columns, fan-out children inside their group ───────

export function layout(graph, expanded) {
  const units = graph.filter((g) => g.k !== "child");
  const byId = new Map(units.map((u) => [u.id, u]));
  const children = new Map();
  for (const g of graph) {
    if (g.k === "child" && g.p) {
      if (!children.has(g.p)) children.set(g.p, []);
      children.get(g.p).push(g);
    }
  }
  const layer = new Map();
  const depth = (id, seen) => {
    if (layer.has(id)) return layer.get(id);
    const u = byId.get(id);
    let best = 0;
    if (u && !seen.has(id)) {
      seen.add(id);
      for (const d of u.d) if (byId.has(d)) best = Math.max(best, depth(d, seen) + 1);
    }
    layer.set(id, best);
    return best;
  };
  for (const u of units) depth(u.id, new Set());

  const columns = [];
  for (const u of units) {
    const c = layer.get(u.id);
    while (columns.length <= c) columns.push([]);
    columns[c].push(u.id);
  }
  const rank = new Map();
  columns.forEach((col, ci) => {
    if (ci > 0) {
      const key = (id) => {
        const deps = byId.get(id).d.filter((d) => rank.has(d));
        if (!deps.length) return Infinity;
        return deps.reduce((s, d) => s + rank.get(d), 0) / deps.length;
      };
      const keys = new Map(col.map((id, i) => [id, [key(id), i]]));
      col.sort((a, b) => keys.get(a)[0] - keys.get(b)[0] || keys.get(a)[1] - keys.get(b)[1]);
    }
    col.forEach((id, i) => rank.set(id, i / Math.max(1, col.length)));
  });

  const boxes = new Map();
  const cols = [];
  let x = PAD;
  let maxH = 0;
  for (const col of columns) {
    const dense = col.length > DENSE_LIMIT;
    let w = CARD_W;
    let hgt = 0;
    let gridCols = 0;
    const items = [];
    if (dense) {
      gridCols = Math.min(50, Math.max(16, Math.ceil(Math.sqrt(col.length * 1.6))));
      w = gridCols * (CELL + CELL_GAP) - CELL_GAP + 22;
      const rows = Math.ceil(col.length / gridCols);
      hgt = 52 + rows * (CELL + CELL_GAP) + 10;
    } else {
      for (const id of col) {
        const kids = children.get(id) || [];
        const isGroup = byId.get(id).k === "group";
        const open = isGroup && expanded(id, kids);
        const rows = open ? Math.min(kids.length, GROUP_ROWS) : 0;
        const itemH = isGroup ? CARD_H + 8 + (open ? rows * ROW_H + 8 : 0) : CARD_H;
        const itemW = isGroup ? GROUP_W : CARD_W;
        items.push({ id, h: itemH, w: itemW, open });
        hgt += itemH + (items.length > 1 ? GAP_Y : 0);
        w = Math.max(w, itemW);
      }
    }
    cols.push({ ids: col, dense, gridCols, x, w, h: hgt, items });
    maxH = Math.max(maxH, hgt);
    x += w + GAP_X;
  }
  for (const c of cols) {
    const top = PAD + (maxH - c.h) / 2;
    c.y = top;
    if (c.dense) {
      for (const id of c.ids) boxes.set(id, { col: c, x: c.x, y: top, w: c.w, h: c.h, dense: true });
      continue;
    }
    let y = top;
    for (const item of c.items) {
      boxes.set(item.id, { col: c, x: c.x, y, w: item.w, h: item.h, open: item.open, dense: false });
      y += item.h + GAP_Y;
    }
  }
  return {
    units,
    byId,
    children,
    columns: cols,
    boxes,
    width: Math.max(x - GAP_X + PAD, 320),
    height: maxH + PAD * 2,
  };
}

// ── the view ─────────────────────────────────────────────────────────────────

class DagView {
  constructor(model, el, options) {
    this.model = model;
    this.live = options.live;
    this.detailsCache = new Map();
    this.selected = null;
    this.toggled = new Map(); // group id -> expanded (user's choice)
    this.offset = 0; // server clock - browser clock, seconds
    this.cancelAt = 0;
    this.root = h("div", "bn-dag");
    el.appendChild(this.root);
    this.buildChrome();
    this.load();
    this.rebuild();
  }

  // ── data ──
  load() {
    this.graph = this.model.get("graph") || [];
    this.state = Object.assign({}, this.model.get("nodes") || {}, this.model.get("patch") || {});
    this.header = this.model.get("header") || {};
    if (this.header.now) this.offset = this.header.now - Date.now() / 1000;
  }

  now() {
    return Date.now() / 1000 + this.offset;
  }

  st(id) {
    return this.state[id] || { s: "pending", a: 0 };
  }

  expanded(id, kids) {
    if (this.toggled.has(id)) return this.toggled.get(id);
    return kids.length > 0 && kids.length <= AUTO_EXPAND && kids.every((k) => k.m);
  }

  // ── chrome: header, progress bar, body, side panel ──
  buildChrome() {
    const head = h("div", "bn-head");
    const title = h("div", "bn-title");
    this.dot = h("span", "bn-dot");
    this.wfName = h("span", "bn-wf");
    this.runId = h("span", "bn-runid");
    this.pill = h("span", "bn-pill");
    title.append(this.dot, this.wfName, this.runId, this.pill);
    const stats = h("div", "bn-stats");
    this.stat = {};
    for (const [key, label] of [
      ["steps", "steps"],
      ["elapsed", "elapsed"],
      ["tokens", "tokens"],
      ["cost", "cost"],
    ]) {
      const box = h("div", `bn-stat bn-stat-${key}`);
      const value = h("b", "bn-stat-value");
      box.append(value, h("span", "bn-stat-label", label));
      stats.appendChild(box);
      this.stat[key] = value;
    }
    this.cancelBtn = h("button", "bn-cancel", "Cancel");
    this.cancelBtn.type = "button";
    this.cancelBtn.title = "Cancel the run (it stays resumable with run_id=)";
    this.cancelBtn.addEventListener("click", () => this.cancel());
    head.append(title, stats, this.cancelBtn);
    this.bar = h("div", "bn-bar");
    this.body = h("div", "bn-body");
    this.scroller = h("div", "bn-scroll");
    this.canvas = h("div", "bn-canvas");
    this.edges = svg("svg", { class: "bn-edges" });
    this.canvas.appendChild(this.edges);
    this.scroller.appendChild(this.canvas);
    this.panel = h("div", "bn-panel");
    this.panel.hidden = true;
    this.body.append(this.scroller, this.panel);
    this.errorLine = h("div", "bn-failure");
    this.errorLine.hidden = true;
    this.root.append(head, this.bar, this.errorLine, this.body);
  }

  // ── structure: cards, dense columns, edges ──
  rebuild() {
    const lay = layout(this.graph, (id, kids) => this.expanded(id, kids));
    this.lay = lay;
    this.canvas.querySelectorAll(".bn-node, .bn-dense").forEach((n) => n.remove());
    this.edges.replaceChildren();
    this.canvas.style.width = `${lay.width}px`;
    this.canvas.style.height = `${lay.height}px`;
    this.edges.setAttribute("width", lay.width);
    this.edges.setAttribute("height", lay.height);
    this.cards = new Map();
    this.cells = new Map();
    for (const col of lay.columns) {
      if (col.dense) this.buildDense(col);
      else for (const item of col.items) this.buildCard(item.id, lay.boxes.get(item.id));
    }
    this.buildEdges();
    this.refresh();
  }

  buildCard(id, box) {
    const entry = this.lay.byId.get(id);
    const card = h("div", "bn-node");
    card.dataset.id = id;
    Object.assign(card.style, {
      left: `${box.x}px`,
      top: `${box.y}px`,
      width: `${box.w}px`,
      height: `${box.h}px`,
    });
    const r1 = h("div", "bn-r1");
    const icon = h("span", "bn-icon");
    const name = h("span", "bn-name", id);
    name.title = id;
    const badge = h("span", "bn-badge");
    r1.append(icon, name, badge);
    const r2 = h("div", "bn-r2");
    const stateText = h("span", "bn-state");
    const dur = h("span", "bn-dur");
    r2.append(stateText, dur);
    const r3 = h("div", "bn-r3");
    const parts = { card, icon, badge, stateText, dur, r3, entry, box };
    card.append(r1, r2, r3);
    if (entry.k === "group") this.buildGroupParts(parts, box);
    card.addEventListener("click", (ev) => {
      const row = ev.target.closest("[data-child]");
      if (ev.target.closest(".bn-toggle")) return;
      this.select(row ? row.dataset.child : id);
    });
    this.canvas.appendChild(card);
    this.cards.set(id, parts);
  }

  buildGroupParts(parts, box) {
    const kids = this.lay.children.get(parts.entry.id) || [];
    const toggle = h("button", "bn-toggle", box.open ? "▾" : "▸");
    toggle.type = "button";
    toggle.title = box.open ? "Collapse" : `Show the ${kids.length} children`;
    toggle.addEventListener("click", () => {
      this.toggled.set(parts.entry.id, !box.open);
      this.rebuild();
    });
    parts.card.querySelector(".bn-r1").appendChild(toggle);
    parts.mini = h("div", "bn-mini");
    parts.card.appendChild(parts.mini);
    if (!box.open) return;
    const table = h("div", "bn-kids");
    table.style.maxHeight = `${GROUP_ROWS * ROW_H}px`;
    parts.rows = new Map();
    for (const kid of kids) {
      const row = h("div", "bn-kid");
      row.dataset.child = kid.id;
      row.title = kid.id;
      const cells = {
        icon: h("span", "bn-icon"),
        label: h("span", "bn-kid-label", childLabel(kid)),
        lat: h("span", "bn-kid-num"),
        tok: h("span", "bn-kid-num"),
        cost: h("span", "bn-kid-num bn-kid-cost"),
      };
      row.append(cells.icon, cells.label, cells.lat, cells.tok, cells.cost);
      table.appendChild(row);
      parts.rows.set(kid.id, { row, ...cells });
    }
    parts.card.appendChild(table);
  }

  buildDense(col) {
    const box = h("div", "bn-dense");
    Object.assign(box.style, {
      left: `${col.x}px`,
      top: `${col.y}px`,
      width: `${col.w}px`,
      height: `${col.h}px`,
    });
    const title = h("div", "bn-dense-title");
    const count = h("span", "bn-dense-count", `${col.ids.length.toLocaleString()} steps`);
    const summary = h("span", "bn-dense-summary");
    title.append(count, summary);
    const grid = h("div", "bn-grid");
    grid.style.gridTemplateColumns = `repeat(${col.gridCols}, ${CELL}px)`;
    for (const id of col.ids) {
      const cell = h("span", "bn-cell");
      cell.dataset.id = id;
      grid.appendChild(cell);
      this.cells.set(id, cell);
    }
    grid.addEventListener("click", (ev) => {
      const cell = ev.target.closest(".bn-cell");
      if (cell) this.select(cell.dataset.id);
    });
    box.append(title, grid);
    col.summary = summary;
    this.canvas.appendChild(box);
  }

  buildEdges() {
    const lay = this.lay;
    const seen = new Set();
    this.edgeList = [];
    for (const u of lay.units) {
      const to = lay.boxes.get(u.id);
      for (const dep of u.d) {
        const from = lay.boxes.get(dep);
        if (!from || !to) continue;
        const key = `${from.dense ? `col${from.col.x}` : dep}>${to.dense ? `col${to.col.x}` : u.id}`;
        if (seen.has(key)) continue;
        seen.add(key);
        const sx = from.x + from.w;
        const sy = from.y + (from.dense ? from.h / 2 : CARD_H / 2);
        const tx = to.x;
        const ty = to.y + (to.dense ? to.h / 2 : CARD_H / 2);
        const dx = Math.max(24, (tx - sx) / 2);
        const path = svg("path", {
          d: `M${sx},${sy} C${sx + dx},${sy} ${tx - dx},${ty} ${tx - 6},${ty}`,
          class: "bn-edge",
        });
        const head = svg("path", { d: `M${tx - 7},${ty - 4} L${tx},${ty} L${tx - 7},${ty + 4}`, class: "bn-arrow" });
        const g = svg("g", {});
        g.append(path, head);
        this.edges.appendChild(g);
        this.edgeList.push({ g, from: from.dense ? null : dep, to: to.dense ? null : u.id });
      }
    }
  }

  // ── values: refreshed at most ~10 times a second by the kernel ──
  refresh() {
    const counts = {};
    let total = 0;
    for (const g of this.graph) {
      if (g.k === "group") continue;
      const s = this.st(g.id).s;
      counts[s] = (counts[s] || 0) + 1;
      total += 1;
    }
    this.counts = counts;
    this.total = total;
    for (const parts of this.cards.values()) this.paintCard(parts);
    for (const [id, cell] of this.cells) {
      const s = this.st(id);
      setClass(cell, `bn-cell st-${s.s}${id === this.selected ? " bn-sel" : ""}`);
      const title = `${id} — ${LABEL[s.s] || s.s}${s.e ? `: ${s.e}` : ""}`;
      if (cell.title !== title) cell.title = title;
    }
    for (const col of this.lay.columns) if (col.dense) this.paintDenseSummary(col);
    for (const edge of this.edgeList) this.paintEdge(edge);
    this.paintHeader();
    this.tick();
    if (this.selected) this.paintPanel();
  }

  aggregate(id) {
    const kids = this.lay.children.get(id) || [];
    const agg = { ti: 0, to: 0, c: null, n: 0, counts: {}, l: 0 };
    for (const kid of kids) {
      const s = this.st(kid.id);
      agg.ti += s.ti || 0;
      agg.to += s.to || 0;
      agg.n += s.n || 0;
      agg.c = addCost(agg.c, s.c);
      agg.counts[s.s] = (agg.counts[s.s] || 0) + 1;
    }
    agg.total = kids.length;
    return agg;
  }

  paintCard(parts) {
    const { entry, card, icon, badge, stateText, dur, r3 } = parts;
    const s = this.st(entry.id);
    const sel = entry.id === this.selected ? " bn-sel" : "";
    setClass(card, `bn-node bn-${entry.k} st-${s.s}${s.e ? " bn-has-error" : ""}${sel}`);
    card.dataset.state = s.s;
    setClass(icon, `bn-icon st-${s.s}`);
    setText(icon, GLYPH[s.s] || "");
    const group = entry.k === "group" ? this.aggregate(entry.id) : null;
    let badgeText = "";
    if (group) badgeText = `${group.total} ${(this.lay.children.get(entry.id) || []).every((k) => k.m) ? "models" : "items"}`;
    else if (s.s === "retryable" || (entry.mx > 1 && s.a > 1)) badgeText = `${s.s === "retryable" ? "retry " : "attempt "}${s.a}/${entry.mx}`;
    setText(badge, badgeText);
    setText(stateText, group ? this.groupLine(group, s) : LABEL[s.s] || s.s);
    setText(dur, this.durationOf(s));
    const ti = group ? group.ti : s.ti || 0;
    const to = group ? group.to : s.to || 0;
    const cost = group ? group.c : s.c;
    const failed = Boolean(s.e) && FAILED.has(s.s);
    let line = "";
    if (failed) line = s.e;
    else if (ti + to > 0 || (cost !== null && cost !== undefined)) line = `${fmtTokens(ti + to)} tok · ${fmtCost(cost ?? 0)}`;
    setText(r3, line);
    setClass(r3, `bn-r3${failed ? " bn-err" : ""}`);
    if (s.e) r3.title = s.e;
    if (group) this.paintGroup(parts, group);
  }

  groupLine(group, s) {
    const done = group.counts.completed || 0;
    const running = group.counts.executing || 0;
    const failed = (group.counts.discarded || 0) + (group.counts.cancelled || 0);
    const bits = [`${done}/${group.total} done`];
    if (running) bits.push(`${running} running`);
    if (failed) bits.push(`${failed} failed`);
    if (!group.total) bits[0] = LABEL[s.s];
    return bits.join(" · ");
  }

  paintGroup(parts, group) {
    const segs = ORDER.filter((k) => group.counts[k]).map((k) => `<i class="st-${k}" style="flex:${group.counts[k]}"></i>`);
    const html = segs.join("");
    if (parts.miniHtml !== html) {
      parts.mini.innerHTML = html;
      parts.miniHtml = html;
    }
    if (!parts.rows) return;
    for (const [id, cells] of parts.rows) {
      const s = this.st(id);
      setClass(cells.row, `bn-kid st-${s.s}${id === this.selected ? " bn-sel" : ""}`);
      setClass(cells.icon, `bn-icon st-${s.s}`);
      setText(cells.icon, GLYPH[s.s] || "");
      setText(cells.lat, s.s === "executing" ? this.durationOf(s) : s.l ? fmtSeconds(s.l / 1000) : this.durationOf(s));
      setText(cells.tok, s.ti || s.to ? fmtTokens((s.ti || 0) + (s.to || 0)) : "");
      setText(cells.cost, s.c !== null && s.c !== undefined ? fmtCost(s.c) : s.e ? "error" : "");
    }
  }

  paintDenseSummary(col) {
    const c = {};
    for (const id of col.ids) {
      const s = this.st(id).s;
      c[s] = (c[s] || 0) + 1;
    }
    const html = ORDER.filter((k) => c[k])
      .map((k) => `<span class="bn-chip st-${k}"><i></i>${c[k].toLocaleString()} ${LABEL[k]}</span>`)
      .join("");
    if (col.summaryHtml !== html) {
      col.summary.innerHTML = html;
      col.summaryHtml = html;
    }
  }

  paintEdge(edge) {
    let cls = "bn-edge-g";
    const from = edge.from ? this.st(edge.from).s : null;
    const to = edge.to ? this.st(edge.to).s : null;
    if (to === "executing") cls += " bn-live";
    else if (from && FAILED.has(from)) cls += " bn-broken";
    else if (from === "completed") cls += " bn-done";
    if (edge.g.getAttribute("class") !== cls) edge.g.setAttribute("class", cls);
  }

  durationOf(s) {
    if (s.t0 && s.t1) return fmtSeconds(s.t1 - s.t0);
    if (s.t0 && !TERMINAL.has(s.s)) return fmtSeconds(this.now() - s.t0);
    return "";
  }

  paintHeader() {
    const hd = this.header;
    const status = hd.status || "loading";
    const failed = this.counts.discarded || 0;
    const cancelled = this.counts.cancelled || 0;
    const done = ["completed", "discarded", "cancelled"].reduce((n, k) => n + (this.counts[k] || 0), 0);
    this.root.dataset.status = status;
    setClass(this.dot, `bn-dot run-${status}`);
    setText(this.wfName, hd.wf || "");
    setText(this.runId, hd.id ? `run ${hd.id.slice(0, 8)}` : "");
    this.runId.title = hd.id || "";
    setClass(this.pill, `bn-pill run-${status}`);
    setText(this.pill, status === "running" ? "running" : status);
    const extra = `${failed ? ` · ${failed} failed` : ""}${cancelled ? ` · ${cancelled} cancelled` : ""}`;
    setText(this.stat.steps, `${done}/${this.total}${extra}`);
    const ti = hd.ti || 0;
    const to = hd.to || 0;
    setText(this.stat.tokens, fmtTokens(ti + to));
    this.stat.tokens.parentNode.title = `${ti.toLocaleString()} in, ${to.toLocaleString()} out`;
    const unpriced = hd.unpriced ? ` + ${hd.unpriced} unpriced` : "";
    setText(this.stat.cost, `${fmtCost(hd.cost ?? "0")}${unpriced}`);
    this.stat.cost.parentNode.title = hd.cost ? `$${hd.cost} (exact)` : "";
    const segs = ORDER.filter((k) => this.counts[k]).map(
      (k) => `<i class="st-${k}" style="flex:${this.counts[k]}" title="${this.counts[k]} ${LABEL[k]}"></i>`,
    );
    const bar = segs.join("");
    if (this.barHtml !== bar) {
      this.bar.innerHTML = bar;
      this.barHtml = bar;
    }
    const running = status === "running" || status === "pending";
    this.cancelBtn.hidden = !(this.live && hd.cancellable && running);
    const cancelling = hd.cancelling || this.cancelAt > 0;
    this.cancelBtn.disabled = cancelling;
    setText(this.cancelBtn, cancelling ? "Cancelling…" : "Cancel");
    const failures = (hd.failed || []).filter((n) => this.st(n).s === "discarded" && this.st(n).e).slice(0, 3);
    this.errorLine.hidden = running || !failures.length;
    if (failures.length) {
      setText(this.errorLine, failures.map((n) => `${n}: ${this.st(n).e}`).join("   ·   "));
    }
  }

  tick() {
    const hd = this.header;
    const end = hd.t1 || (hd.status === "running" ? this.now() : null);
    setText(this.stat.elapsed, hd.t0 && end ? fmtSeconds(end - hd.t0) : "–");
    for (const parts of this.cards.values()) {
      const s = this.st(parts.entry.id);
      if (s.s === "executing" || (parts.entry.k === "group" && !TERMINAL.has(s.s))) {
        setText(parts.dur, this.durationOf(s));
        if (parts.rows) this.paintGroup(parts, this.aggregate(parts.entry.id));
      }
    }
  }

  // ── side panel ──
  select(id) {
    this.selected = this.selected === id ? null : id;
    this.panel.hidden = !this.selected;
    if (this.selected && !this.detailsCache.has(this.selected)) {
      this.model.send({ type: "detail", id: this.selected });
    }
    this.refresh();
  }

  onMessage(msg) {
    if (msg && msg.type === "detail") {
      this.detailsCache.set(msg.id, msg.detail);
      if (msg.id === this.selected) this.paintPanel();
    }
  }

  paintPanel() {
    const id = this.selected;
    const entry = this.graph.find((g) => g.id === id);
    if (!entry) return;
    const s = this.st(id);
    const detail = this.detailsCache.get(id);
    const key = JSON.stringify([id, s, !!detail, this.header.status]);
    if (this.panelKey === key) return;
    this.panelKey = key;
    const panel = this.panel;
    panel.replaceChildren();
    const head = h("div", "bn-panel-head");
    const icon = h("span", `bn-icon st-${s.s}`, GLYPH[s.s] || "");
    const title = h("span", "bn-panel-title", id);
    title.title = id;
    const close = h("button", "bn-close", "×");
    close.type = "button";
    close.title = "Close";
    close.addEventListener("click", () => this.select(id));
    head.append(icon, title, close);
    panel.appendChild(head);
    panel.appendChild(this.facts(entry, s));
    if (s.e || (detail && detail.error)) {
      panel.appendChild(this.section("Error", h("div", "bn-pre bn-pre-error", (detail && detail.error) || s.e)));
    }
    if (entry.k === "group") panel.appendChild(this.section("Children", this.childTable(id)));
    if (!detail) {
      panel.appendChild(h("div", "bn-muted bn-pad", this.live ? "Loading details…" : "Details were not saved with this snapshot."));
      return;
    }
    if (detail.result !== null && detail.result !== undefined) {
      panel.appendChild(this.section("Result", h("div", "bn-pre", detail.result)));
    }
    if (detail.calls && detail.calls.length) panel.appendChild(this.section("LLM calls", this.callTable(detail.calls)));
    panel.appendChild(this.section("Captured context", this.contextList(detail.context || [])));
  }

  facts(entry, s) {
    const grid = h("div", "bn-facts");
    const row = (k, v) => {
      if (v === "" || v === null || v === undefined) return;
      grid.append(h("div", "bn-k", k), h("div", "bn-v", v));
    };
    row("State", LABEL[s.s] || s.s);
    if (entry.k !== "group") row("Attempts", `${s.a || 0} of ${entry.mx}`);
    if (entry.m) row("Model", entry.m);
    if (entry.i !== null && entry.i !== undefined) row("Item", `#${entry.i}`);
    if (s.t0) row("Started", new Date(s.t0 * 1000).toLocaleTimeString());
    row("Duration", this.durationOf(s));
    const agg = entry.k === "group" ? this.aggregate(entry.id) : s;
    if ((agg.ti || 0) + (agg.to || 0)) row("Tokens", `${(agg.ti || 0).toLocaleString()} in · ${(agg.to || 0).toLocaleString()} out`);
    if (agg.c !== null && agg.c !== undefined) row("Cost", `${fmtCost(agg.c)}${s.u ? ` + ${s.u} unpriced` : ""}`);
    if (agg.n) row("LLM calls", `${agg.n}${s.rp ? ` (${s.rp} replayed)` : ""}`);
    return grid;
  }

  section(title, content) {
    const box = h("div", "bn-section");
    box.append(h("div", "bn-section-title", title), content);
    return box;
  }

  // Tables are div grids: notebook HTML styles (tables, pre) must not restyle the panel.
  table(headers, rows, template, onRow) {
    const box = h("div", "bn-table");
    const line = (cells, cls) => {
      const tr = h("div", cls);
      tr.style.gridTemplateColumns = template;
      for (const x of cells) tr.appendChild(h("span", "", x));
      box.appendChild(tr);
      return tr;
    };
    line(headers, "bn-tr bn-th");
    rows.forEach((r, i) => {
      const tr = line(r, onRow ? "bn-tr bn-click" : "bn-tr");
      if (onRow) tr.addEventListener("click", () => onRow(i));
    });
    return box;
  }

  childTable(id) {
    const kids = (this.lay.children.get(id) || []).slice(0, 500);
    const rows = kids.map((k) => {
      const s = this.st(k.id);
      const latency = s.l ? fmtSeconds(s.l / 1000) : this.durationOf(s);
      return [childLabel(k), LABEL[s.s] || s.s, latency, fmtTokens((s.ti || 0) + (s.to || 0)), fmtCost(s.c)];
    });
    const template = "minmax(0, 1.7fr) 0.9fr 0.7fr 0.6fr 0.9fr";
    return this.table(["child", "state", "latency", "tokens", "cost"], rows, template, (i) => this.select(kids[i].id));
  }

  callTable(calls) {
    const rows = calls.map((c) => [
      shortModel(c.m) + (c.rp ? " (replayed)" : ""),
      c.a,
      fmtTokens(c.ti),
      fmtTokens(c.to),
      fmtSeconds(c.l / 1000),
      fmtCost(c.c),
    ]);
    return this.table(["model", "try", "in", "out", "latency", "cost"], rows, "minmax(0, 1.8fr) 0.4fr 0.5fr 0.5fr 0.7fr 1fr");
  }

  contextList(entries) {
    const box = h("div", "bn-context");
    if (!entries.length) {
      box.appendChild(h("div", "bn-muted", "Nothing captured. Run with debug=True (workflow or step) to keep prompts and responses; ctx.log() lines show here too."));
      return box;
    }
    for (const e of entries) {
      const item = h("div", `bn-ctx bn-ctx-${e.k}`);
      item.append(h("span", "bn-ctx-kind", `${e.k}${e.a ? ` · attempt ${e.a}` : ""}`), h("div", "bn-pre", e.t));
      box.appendChild(item);
    }
    return box;
  }

  // ── cancel ──
  cancel() {
    if (this.cancelAt) return;
    this.cancelAt = Date.now();
    this.model.send({ type: "cancel" });
    this.paintHeader();
    // A kernel that queues widget messages while a cell awaits (ipykernel < 7) only sees the
    // click after the cell ends: then interrupt the kernel, which cancels the run as well.
    setTimeout(() => {
      const hd = this.header;
      if (!hd.cancelling && hd.status === "running") interruptKernel(this.model.get("kernel_id"));
    }, CANCEL_FALLBACK_MS);
  }

  // ── model events ──
  onGraph() {
    this.load();
    this.rebuild();
  }

  onValues() {
    this.load();
    this.refresh();
  }
}

function interruptKernel(kernelId) {
  if (!kernelId) return;
  let config = {};
  const node = document.getElementById("jupyter-config-data");
  try {
    config = node ? JSON.parse(node.textContent) : {};
  } catch (_) {
    config = {};
  }
  const base = (config.baseUrl || "/").replace(/\/?$/, "/");
  const headers = {};
  if (config.token) headers.Authorization = `token ${config.token}`;
  const xsrf = document.cookie.match(/(?:^|;\s*)_xsrf=([^;]*)/);
  if (xsrf) headers["X-XSRFToken"] = decodeURIComponent(xsrf[1]);
  fetch(`${base}api/kernels/${kernelId}/interrupt`, { method: "POST", headers, credentials: "same-origin" }).catch(
    (err) => console.warn("baton_nb: could not interrupt the kernel", err),
  );
}

function mount(model, el, live) {
  const view = new DagView(model, el, { live });
  const onGraph = () => view.onGraph();
  const onValues = () => view.onValues();
  const onMsg = (msg) => view.onMessage(msg);
  model.on("change:graph", onGraph);
  model.on("change:nodes", onValues);
  model.on("change:patch", onValues);
  model.on("change:header", onValues);
  model.on("msg:custom", onMsg);
  const timer = setInterval(() => {
    const status = view.header.status;
    if (view.root.isConnected && (status === "running" || status === "pending")) view.tick();
  }, 500);
  return () => {
    clearInterval(timer);
    model.off("change:graph", onGraph);
    model.off("change:nodes", onValues);
    model.off("change:patch", onValues);
    model.off("change:header", onValues);
    model.off("msg:custom", onMsg);
  };
}

// A read-only model over the state saved with a finished run (the notebook snapshot).
function staticModel(state) {
  const handlers = [];
  return {
    get: (key) => (key === "kernel_id" ? "" : state[key]),
    on: (event, fn) => event === "msg:custom" && handlers.push(fn),
    off: () => {},
    send: (msg) => {
      if (msg.type !== "detail") return;
      const detail = (state.details || {})[msg.id];
      if (detail) setTimeout(() => handlers.forEach((fn) => fn({ type: "detail", id: msg.id, detail })), 0);
    },
  };
}

export function renderStatic(el, state) {
  el.querySelectorAll(".bn-fallback").forEach((node) => node.remove());
  return mount(staticModel(state), el, false);
}

function render({ model, el }) {
  return mount(model, el, true);
}

export default { render };

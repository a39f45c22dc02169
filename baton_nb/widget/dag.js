// baton_nb DAG view. One renderer for the live widget (anywidget) and the saved snapshot.
//
// The model carries plain JSON made by baton_nb/widget/_state.py:
//   graph  [{id, k: step|group|child, p: parent, d: deps, m: model, i: item, mx: max attempts}],
//          sent as columns (`fromColumns`; a list of entries in kernels before them)
//   nodes  {id: {s: state, a: attempt, t0, t1: start and end in ms since the epoch, ti, to,
//          c: cost, u, n: calls (paid, replayed and cached), rp: replayed calls, e, r,
//          x: a map group's items with no child stored yet (counted pending), if any,
//          ch: calls answered from the response cache (no tokens, no cost), if any}}
//   changed  the state of each node changed since the last send, as columns (`fromColumns`:
//          {id: [ids], s: [...] | {all: value} | {all: value, at: [i], v: [value at i]},
//          ...}), replacing the model's (below)
//   patch  (kernels before `changed`, saved widget states) {id: the fields of the node
//          changed since the last send (null: a field gone)}, merged into the model's node
//          states (below); a node never sent is pending
//   grown  {at, add}: the graph's entries of the steps added since it had `at` entries (a
//          map's children, a chunk at a time; as columns, `fromColumns`), appended to the
//          model's graph (below)
//   groups {id: a tallied map (one of 2,000 items or more: _tally.py): {k: its children stored,
//          l: how many of them are listed (the first: they have their own node states, as
//          its discarded children do; the others only count here), s: {state: children},
//          ti, to, u, n, rp, ch: their sums, c: their cost (null: none has one)}}
//   header {wf, id, status, by: the lease's holder when status is taken_over (this execution
//           lost the run's lease: the run goes on there), t0, t1, now, cost, unpriced, ti, to,
//           failed, cancellable, cancelling,
//           batches: [{k, step, m: model, st: state, n: requests, ok: answered, f: failed,
//                      c: cost, sv: saved, d: discount, rid: provider's id}],
//           spend: {b: budget, s: spent, r: reserved, why: reason, bt: cost of the run's provider
//                   batches, not held to the budget (only when not 0)} | null,
//           cached: calls answered from the response cache, saved: what they saved}
// Layout, aggregation and formatting live here and only here.
//
// Words: the step states of DESIGN §3, as they are (`discarded`, `cancelled`, `executing`…),
// everywhere; "x/y completed" always counts completed steps. A fan-out group is not a step:
// its children are. A duration is wall-clock, from a step's first start to its end
// (retries and their waits included); call latency is only shown per LLM call.

// A node the view was never sent: what Python's PENDING shows (its other fields read as 0 or
// null). Both what a node shows and what its first patch is merged into: that patch holds only
// what changed from PENDING, maybe not its state.
const NEVER_SENT = Object.freeze({ s: "pending", a: 0 });

const DENSE_LIMIT = 40; // a column with more steps is drawn as a grid of cells
const CARD_W = 216;
const GROUP_W = 300;
const CARD_H = 68;
const GAP_X = 64; // the gutter between columns: edges bend only here
const GAP_Y = 16; // the gap between cards: edges crossing a column pass through it
const PAD = 18;
const CELL = 10;
const CELL_GAP = 2;
const ROW_H = 22;
const GROUP_EXTRA = 24; // a group card's extra height: the line of its children's states, its bar
const GROUP_ROWS = 8; // visible child rows in an expanded group (then it scrolls)
const AUTO_EXPAND = 8; // multi-model groups up to this size start expanded
const PANEL_KIDS = 500; // children listed in a group's side panel
const CANCEL_FALLBACK_MS = 2500;
const MIN_ZOOM = 0.2;
const MAX_ZOOM = 2;
const AUTO_FIT_MIN = 0.5; // a wide graph starts fitted to the width, down to this zoom
const LANE = 3; // px between edges that share a gap

const TERMINAL = new Set(["completed", "discarded", "cancelled"]);
const FAILED = new Set(["discarded", "cancelled"]);
// Counts are listed in this order: the outcome first, then what is still going on.
const SHOWN = ["completed", "discarded", "cancelled", "executing", "retryable", "snoozed", "pending"];
const JUMPABLE = new Set(["discarded", "cancelled", "executing", "retryable", "snoozed"]);
const GLYPH = {
  snoozed: "z",
  retryable: "↻",
  completed: "✓",
  discarded: "✕",
  cancelled: "–",
};

// What the user was looking at, per run: kept when the live view is replaced by the saved
// snapshot at the end of the run (the open panel, its scroll, the zoom, the scroll).
const UI = (globalThis.__baton_nb_ui = globalThis.__baton_nb_ui || new Map());

// ── small helpers ────────────────────────────────────────────────────────────

function h(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function button(cls, text, title) {
  const b = h("button", cls, text);
  b.type = "button";
  if (title) b.title = title;
  return b;
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

function clamp(x, lo, hi) {
  return Math.min(hi, Math.max(lo, x));
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

export function fmtLatency(ms) {
  if (ms === null || ms === undefined || !isFinite(ms)) return "";
  return ms < 1000 ? `${Math.round(ms)} ms` : fmtSeconds(ms / 1000);
}

// At most 6 characters below a billion: "950", "9.9k", "123k", "1.0M" (never "1000k":
// what rounds to 1,000k is 1.0M), "123.5M".
export function fmtTokens(n) {
  if (!n) return "0";
  if (n < 1000) return String(n);
  if (n < 999_500) return `${(n / 1000).toFixed(n < 9_950 ? 1 : 0)}k`;
  return `${(n / 1e6).toFixed(1)}M`;
}

const BATCH_WORDS = {
  prepared: "stored, submitting",
  submitted: "submitted",
  running: "in progress",
  cancelling: "cancelling",
  ended: "ended, storing answers",
  done: "done",
  expired: "expired (the rest asked again)",
  cancelled: "cancelled",
  failed: "failed",
};

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

// The run's budget and the response cache (DESIGN §11) as a line of the header: spent of
// the budget (reserved: calls in flight), why the run stopped, calls cached and the saving.
export function spendLine(hd) {
  const parts = [];
  const s = hd.spend;
  if (s) {
    const held = Number(s.r) ? ` (${fmtCost(s.r)} reserved)` : "";
    const reached = s.why ? ` · <span class="bn-budget-reached">budget reached</span>` : "";
    // Calls in provider batches are not held to the budget (docs/spend_less.md, Limits):
    // said apart, as SpendState.text() says it, never a bare "$0 spent" on a paid run.
    const spent = s.bt
      ? `${fmtCost(s.s)} of ${fmtCost(s.b)} spent by calls held to the budget${held}; ${fmtCost(s.bt)} in provider batches, not held to it`
      : `${fmtCost(s.s)} spent of ${fmtCost(s.b)}${held}`;
    parts.push(`<b>budget</b> ${spent}${reached}`);
  }
  if (hd.cached) {
    const calls = `${hd.cached.toLocaleString()} call${hd.cached === 1 ? "" : "s"}`;
    parts.push(`<b>cache</b> ${calls} answered from it · saved ${fmtCost(hd.saved || "0")}`);
  }
  if (!parts.length) return "";
  const title = s && s.why ? ` title="${escapeHtml(s.why)}"` : "";
  return `<div class="bn-batch bn-spend"${title}>${parts.join(" · ")}</div>`;
}

// This execution lost the run's lease: who goes on with the run, and how to follow it there.
export function takenLine(hd) {
  if (hd.status !== "taken_over") return "";
  const by = hd.by ? ` by <code>${escapeHtml(hd.by)}</code>` : "";
  const follow = `bn.DagWidget(${escapeHtml(JSON.stringify(hd.id || ""))}, db=...)`;
  return (
    `<div class="bn-batch bn-taken"><b>taken over</b>${by}: the run goes on there, nothing more ` +
    `of it is written here · follow it with <code>${follow}</code></div>`
  );
}

// The kernel this view spoke to is gone (restarted, shut down): nothing more reaches it.
export const GONE_TEXT =
  "kernel restarted or disconnected: this view stopped updating; run the cell again to resume the run";

export function goneLine(gone, hd) {
  // a finished run's view is whole: nothing is missing from it, nothing to say
  if (!gone || !(hd.status === "running" || hd.status === "pending")) return "";
  const text = escapeHtml(GONE_TEXT);
  return `<div class="bn-batch bn-notice bn-gone" title="${text}">${text}</div>`;
}

// What the notebook's end of a run tells of its workers (no live worker, a coordinator
// that stopped answering, taken over): one line; `...` in it is code.
export function noticeLine(hd) {
  if (!hd.notice) return "";
  const text = escapeHtml(hd.notice).replace(/`([^`]+)`/g, "<code>$1</code>");
  return `<div class="bn-batch bn-notice" title="${escapeHtml(hd.notice)}">${text}</div>`;
}

// One batch as a line of the header: model, state, n of N done, and what it saves.
export function batchLine(b) {
  const done = `${(b.ok || 0).toLocaleString()} of ${(b.n || 0).toLocaleString()} done`;
  const failed = b.f ? ` · ${b.f.toLocaleString()} not answered` : "";
  let saving = "";
  if (b.sv !== null && b.sv !== undefined) saving = ` · saved ${fmtCost(b.sv)} (paid ${fmtCost(b.c)})`;
  else if (b.d) saving = ` · saves ${Math.round(b.d * 100)}%`;
  const title = `batch ${b.k}${b.rid ? ` (provider id ${b.rid})` : ""} of step ${b.step}`;
  return (
    `<div class="bn-batch bt-${escapeHtml(b.st)}" title="${escapeHtml(title)}">` +
    `<b>batch</b> ${escapeHtml(b.m)} · <span class="bn-batch-state">${escapeHtml(BATCH_WORDS[b.st] || b.st)}</span>` +
    ` · ${done}${failed}${saving}</div>`
  );
}

export function fmtCost(value) {
  if (value === null || value === undefined) return "";
  const n = Number(value);
  if (!isFinite(n)) return `$${value}`;
  if (n === 0) return "$0";
  let digits = 10;
  if (n >= 100) digits = 0;
  else if (n >= 1) digits = 2;
  else if (n >= 0.01) digits = 4;
  else digits = Math.min(Math.max(2 - Math.floor(Math.log10(n)), 4), 10);
  // The kernel sends money as exact decimal strings: rounded on the digits, half up
  // (0.0001425 -> 0.000143; a float's toFixed gave 0.000142, its binary value being below)
  return `$${typeof value === "string" ? toFixedExact(value, digits) : n.toFixed(digits)}`;
}

// A plain decimal string (``0.0001425``, as fmt_money writes money) rounded half up to
// ``digits`` fraction digits, on its digits (no float); anything else: Number's toFixed.
export function toFixedExact(text, digits) {
  const m = /^(\d+)(?:\.(\d*))?$/.exec(text);
  if (!m) return Number(text).toFixed(digits);
  const whole = m[1];
  const frac = m[2] || "";
  const kept = (whole + frac.slice(0, digits).padEnd(digits, "0")).split("");
  if (frac.length > digits && frac[digits] >= "5") {
    let i = kept.length - 1;
    while (i >= 0 && kept[i] === "9") kept[i--] = "0";
    if (i >= 0) kept[i] = String(Number(kept[i]) + 1);
    else kept.unshift("1");
  }
  const all = kept.join("");
  const int = all.slice(0, all.length - digits).replace(/^0+(?=\d)/, "");
  return digits ? `${int}.${all.slice(all.length - digits)}` : int;
}

// A cost that may miss calls of unknown price: never a bare "$0" for an unknown price.
export function fmtCostKnown(known, unpriced) {
  if (!unpriced) return fmtCost(known ?? 0);
  if (!Number(known || 0)) return "unknown";
  return `${fmtCost(known)} + ?`;
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

export function countsText(counts, total) {
  const bits = SHOWN.filter((k) => counts[k]).map((k) => `${counts[k].toLocaleString()} ${k}`);
  return `${bits.join(" · ") || "nothing"} of ${total.toLocaleString()}`;
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
  columns.forEach((col, index) => {
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
        const open = isGroup && kids.length > 0 && expanded(id, kids);
        const rows = open ? Math.min(kids.length, GROUP_ROWS) : 0;
        const itemH = isGroup ? CARD_H + GROUP_EXTRA + (open ? rows * ROW_H + 8 : 0) : CARD_H;
        const itemW = isGroup ? GROUP_W : CARD_W;
        items.push({ id, h: itemH, w: itemW, open });
        hgt += itemH + (items.length > 1 ? GAP_Y : 0);
        w = Math.max(w, itemW);
      }
    }
    cols.push({ index, ids: col, dense, gridCols, x, w, h: hgt, items });
    maxH = Math.max(maxH, hgt);
    x += w + GAP_X;
  });
  const height = maxH + PAD * 2;
  for (const c of cols) {
    const top = PAD + (maxH - c.h) / 2;
    c.y = top;
    if (c.dense) {
      for (const id of c.ids) boxes.set(id, { col: c, x: c.x, y: top, w: c.w, h: c.h, dense: true });
      c.gaps = [
        [0, top],
        [top + c.h, height],
      ];
      continue;
    }
    let y = top;
    c.gaps = [];
    let free = 0;
    for (const item of c.items) {
      boxes.set(item.id, { col: c, x: c.x, y, w: item.w, h: item.h, open: item.open, dense: false });
      c.gaps.push([free, y]);
      free = y + item.h;
      y += item.h + GAP_Y;
    }
    c.gaps.push([free, height]);
  }
  const width = Math.max(x - GAP_X + PAD, 320);
  const lay = { units, byId, children, columns: cols, boxes, width, height };
  lay.edges = routeEdges(lay);
  return lay;
}

// ── edges: bends in the gutters between columns, straight through gaps between cards ──
//
// A dependency from column a to column b leaves its card to the right, crosses every
// column between a and b through a free horizontal lane (a gap between two cards, or the
// space above or below the column), and bends only in the gutters, where there are no
// cards. So no edge is ever drawn across, or hidden behind, a card.

function port(box) {
  return box.y + (box.dense ? box.h / 2 : Math.min(CARD_H, box.h) / 2);
}

function pickLane(col, desired, used) {
  let best = null;
  let bestCost = Infinity;
  col.gaps.forEach(([top, bottom], i) => {
    if (bottom - top < 6) return;
    const cost = desired < top ? top - desired : desired > bottom ? desired - bottom : 0;
    if (cost < bestCost) {
      bestCost = cost;
      best = i;
    }
  });
  if (best === null) return desired; // no gap at all (cannot happen: above and below are free)
  const [top, bottom] = col.gaps[best];
  const key = `${col.index}:${best}`;
  const n = used.get(key) || 0;
  used.set(key, n + 1);
  const lo = top + 4;
  const hi = bottom - 4;
  if (bottom - top <= 4 * GAP_Y) {
    // a gap between cards: lanes around its middle
    const step = Math.ceil(n / 2) * LANE * (n % 2 ? 1 : -1);
    return clamp((top + bottom) / 2 + step, lo, hi);
  }
  return clamp(clamp(desired, lo, hi) + n * LANE, lo, hi); // above or below the column
}

function bend(x0, y0, x1, y1) {
  const dx = (x1 - x0) / 2;
  return `C${x0 + dx},${y0} ${x1 - dx},${y1} ${x1},${y1}`;
}

function routeEdges(lay) {
  const seen = new Set();
  const used = new Map();
  const out = [];
  for (const u of lay.units) {
    const to = lay.boxes.get(u.id);
    for (const dep of u.d) {
      const from = lay.boxes.get(dep);
      if (!from || !to) continue;
      const key = `${from.dense ? `col${from.col.index}` : dep}>${to.dense ? `col${to.col.index}` : u.id}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const sy = port(from);
      const ty = port(to);
      const tx = to.x;
      let x = from.col.x + from.col.w;
      let y = sy;
      let d = `M${from.x + from.w},${sy} H${x}`;
      const a = from.col.index;
      const b = to.col.index;
      for (let k = a + 1; k < b; k += 1) {
        const col = lay.columns[k];
        const desired = y + (ty - y) / (b - k + 1);
        const lane = pickLane(col, desired, used);
        d += ` ${bend(x, y, col.x, lane)} H${col.x + col.w}`;
        x = col.x + col.w;
        y = lane;
      }
      d += ` ${bend(x, y, tx - 6, ty)}`;
      out.push({ d, tx, ty, from: from.dense ? null : dep, to: to.dense ? null : u.id });
    }
  }
  return out;
}

// The zoom of the graph: − / + (and Ctrl + wheel), 1:1, Fit (to the width), the middle
// of what is shown kept in the middle. A graph wider than the view starts fitted to it
// (not below AUTO_FIT_MIN); a fitted graph follows the width of the widget (not the side
// panel opening or closing: that would zoom under the user's click), to the pixel: the
// saved snapshot that replaces the live widget at the end of the run keeps its zoom only
// if it is not fitted (JupyterLab pads an HTML output: the snapshot is 20 px narrower).
class Zoom {
  constructor(view) {
    this.view = view;
    this.level = 1;
    // What the level follows until the user zooms: false (nothing), "auto" (the width, as
    // a wide graph opens: not below AUTO_FIT_MIN) or "width" (Fit: the whole width).
    this.fit = false;
    this.sized = false;
    this.outerWidth = 0;
  }

  set(z, keepFit) {
    const v = this.view;
    const level = clamp(z, MIN_ZOOM, MAX_ZOOM);
    const sc = v.scroller;
    const cx = (sc.scrollLeft + sc.clientWidth / 2) / this.level;
    const cy = (sc.scrollTop + sc.clientHeight / 2) / this.level;
    this.level = level;
    if (!keepFit) this.fit = false;
    this.apply();
    sc.scrollLeft = cx * level - sc.clientWidth / 2;
    sc.scrollTop = cy * level - sc.clientHeight / 2;
    v.remember();
  }

  // The level that fits the graph in `width` px (less 4: the sizer is rounded up).
  fitted(width) {
    const z = Math.min(1, (width - 4) / this.view.lay.width);
    return this.fit === "auto" ? Math.max(AUTO_FIT_MIN, z) : z;
  }

  // The width a fitted graph follows: the scroller's (less its vertical scrollbar), and
  // the side panel's if it is open (it opens and closes under the user's clicks).
  room() {
    const v = this.view;
    const sc = v.scroller;
    return v.body.clientWidth - (sc.offsetWidth - sc.clientWidth);
  }

  fitWidth() {
    const width = this.view.scroller.clientWidth; // Fit: what is shown now
    if (!width) return;
    this.fit = "width";
    this.set(this.fitted(width), true);
  }

  // Fitted again when the level is a pixel or more away from the fit.
  follow() {
    const z = this.fitted(this.room());
    if (Math.abs(z - this.level) * this.view.lay.width >= 1) this.set(z, true);
  }

  apply() {
    const v = this.view;
    const z = this.level;
    v.sizer.style.width = `${Math.ceil(v.lay.width * z)}px`;
    v.sizer.style.height = `${Math.ceil(v.lay.height * z)}px`;
    v.canvas.style.transform = z === 1 ? "" : `scale(${z})`;
    setText(v.zoomLabel, `${Math.round(z * 100)}%`);
    v.root.dataset.zoom = z.toFixed(3);
  }

  onWheel(ev) {
    if (!(ev.ctrlKey || ev.metaKey)) return;
    ev.preventDefault();
    this.set(this.level * Math.exp(-ev.deltaY / 400));
  }

  // Called when the widget's size may have changed (and once it is first shown).
  resized() {
    const v = this.view;
    const width = v.scroller.clientWidth;
    const outer = v.root.clientWidth;
    if (!width || !v.lay || outer === this.outerWidth) return;
    this.outerWidth = outer;
    if (!this.sized) {
      this.sized = true;
      if (v.restored) {
        v.restoreScroll();
        if (this.fit) this.follow(); // fitted to the live widget's width, not this one's
      } else if (v.lay.width > width) {
        this.fit = "auto";
        this.set(this.fitted(width), true);
      }
    } else if (this.fit) {
      this.follow();
    }
  }

  watch() {
    const check = () => this.resized();
    if (typeof ResizeObserver !== "undefined") {
      this.observer = new ResizeObserver(check);
      this.observer.observe(this.view.root);
    }
    requestAnimationFrame(check);
  }

  dispose() {
    if (this.observer) this.observer.disconnect();
  }
}

// ── the view ─────────────────────────────────────────────────────────────────

class DagView {
  constructor(model, el, options) {
    this.model = model;
    this.live = options.live;
    this.detailsCache = new Map();
    this.asked = new Map(); // node id -> its state when its details were asked for
    this.selected = null;
    this.toggled = new Map(); // group id -> expanded (user's choice)
    this.offset = 0; // server clock - browser clock, seconds
    this.cancelAt = 0;
    this.goneAt = 0; // server-clock time the kernel connection was lost (0: connected)
    this.zoom = new Zoom(this);
    this.jumps = {}; // state -> index of the last node jumped to
    this.root = h("div", "bn-dag");
    el.appendChild(this.root);
    this.buildChrome();
    this.load();
    this.restore();
    this.rebuild();
    this.zoom.watch();
  }

  // ── data ──
  load() {
    this.graph = modelGraph(this.model);
    this.state = nodeStates(this.model);
    this.groups = this.model.get("groups") || {}; // the tallied maps: counted, not drawn child by child
    this.header = this.model.get("header") || {};
    if (this.header.now) this.offset = this.header.now - Date.now() / 1000;
    this.entries = new Map(this.graph.map((g) => [g.id, g]));
  }

  now() {
    return this.goneAt || Date.now() / 1000 + this.offset;
  }

  st(id) {
    return this.state[id] || NEVER_SENT;
  }

  // The children a group lists (its table, its side panel): a tallied map's items of an
  // index below `l` (the others have no state of their own: counted in the map's tally).
  listed(id) {
    const kids = this.lay.children.get(id) || [];
    const tally = this.groups[id];
    return tally ? kids.filter((k) => this.isListed(k)) : kids;
  }

  isListed(entry) {
    const tally = this.groups[entry.p];
    return !tally || (entry.i !== null && entry.i !== undefined && entry.i < tally.l);
  }

  expanded(id, kids) {
    if (this.toggled.has(id)) return this.toggled.get(id);
    return kids.length > 0 && kids.length <= AUTO_EXPAND && kids.every((k) => k.m);
  }

  // ── what the user looks at, kept across the live -> snapshot swap ──
  uiKey() {
    return this.header.id || null;
  }

  restore() {
    const saved = this.uiKey() && UI.get(this.uiKey());
    this.restored = saved || null;
    if (!saved) return;
    this.zoom.level = saved.zoom;
    this.zoom.fit = saved.fit;
    this.toggled = new Map(saved.toggled);
    this.selected = saved.selected;
  }

  remember() {
    const key = this.uiKey();
    if (!key || this.restoring) return;
    UI.set(key, {
      zoom: this.zoom.level,
      fit: this.zoom.fit,
      toggled: [...this.toggled],
      selected: this.selected,
      scrollLeft: this.scroller.scrollLeft,
      scrollTop: this.scroller.scrollTop,
      panelTop: this.panel.scrollTop,
    });
  }

  // ── chrome: header, progress bar, tools, banner, body, side panel ──
  buildChrome() {
    const head = h("div", "bn-head");
    const title = h("div", "bn-title");
    this.dot = h("span", "bn-dot");
    this.wfName = h("span", "bn-wf");
    this.runId = h("code", "bn-runid");
    this.runId.title = "The run's id: resume it with wf.run(run_id=...)";
    this.copyBtn = button("bn-copy", "copy", "Copy the run id");
    this.copyBtn.addEventListener("click", () => this.copyId());
    this.pill = h("span", "bn-pill");
    const line1 = h("div", "bn-title-row");
    line1.append(this.dot, this.wfName, this.pill);
    const line2 = h("div", "bn-title-row bn-id-row");
    line2.append(h("span", "bn-id-label", "run"), this.runId, this.copyBtn);
    title.append(line1, line2);
    const stats = h("div", "bn-stats");
    this.stat = {};
    for (const [key, label] of [
      ["steps", "steps completed"],
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
    this.cancelBtn = button("bn-cancel", "Cancel", "Cancel the run (it stays resumable with run_id=)");
    this.cancelBtn.addEventListener("click", () => this.cancel());
    head.append(title, stats, this.cancelBtn);
    this.bar = h("div", "bn-bar");

    const tools = h("div", "bn-tools");
    this.chips = h("div", "bn-counts");
    this.chips.addEventListener("click", (ev) => {
      const chip = ev.target.closest("[data-jump]");
      if (chip) this.jumpToNext(chip.dataset.jump);
    });
    const zoom = h("div", "bn-zoom");
    const out = button("bn-zbtn bn-zoom-out", "−", "Zoom out (Ctrl + wheel)");
    const inn = button("bn-zbtn bn-zoom-in", "+", "Zoom in (Ctrl + wheel)");
    this.zoomLabel = h("span", "bn-zoom-level");
    const fit = button("bn-zbtn bn-fit", "Fit", "Fit the graph to the width");
    const one = button("bn-zbtn bn-zoom-reset", "1:1", "Actual size");
    out.addEventListener("click", () => this.zoom.set(this.zoom.level / 1.25));
    inn.addEventListener("click", () => this.zoom.set(this.zoom.level * 1.25));
    fit.addEventListener("click", () => this.zoom.fitWidth());
    one.addEventListener("click", () => this.zoom.set(1));
    zoom.append(out, this.zoomLabel, inn, fit, one);
    tools.append(this.chips, zoom);

    this.errorLine = h("div", "bn-failure");
    this.errorLine.hidden = true;
    this.errorLine.addEventListener("click", (ev) => {
      const link = ev.target.closest("[data-id]");
      if (link) this.jumpTo(link.dataset.id);
      else if (ev.target.closest("[data-jump]")) this.jumpToNext("discarded");
    });

    // two costs on one line: "$" pairs that a notebook's math typesetting must leave alone
    this.batchLines = h("div", "bn-batches tex2jax_ignore mathjax_ignore");
    this.batchLines.hidden = true;

    this.body = h("div", "bn-body");
    this.scroller = h("div", "bn-scroll");
    this.sizer = h("div", "bn-sizer");
    this.canvas = h("div", "bn-canvas");
    this.edges = svg("svg", { class: "bn-edges" });
    this.canvas.appendChild(this.edges);
    this.sizer.appendChild(this.canvas);
    this.scroller.appendChild(this.sizer);
    this.scroller.addEventListener("scroll", () => this.remember(), { passive: true });
    this.scroller.addEventListener("wheel", (ev) => this.zoom.onWheel(ev), { passive: false });
    this.panel = h("div", "bn-panel");
    this.panel.hidden = true;
    this.side = new SidePanel(this, this.panel);
    this.panel.addEventListener("scroll", () => this.remember(), { passive: true });
    this.body.append(this.scroller, this.panel);
    this.root.append(head, this.bar, tools, this.errorLine, this.batchLines, this.body);
  }

  restoreScroll() {
    const saved = this.restored;
    if (!saved) return;
    this.restoring = true;
    this.scroller.scrollLeft = saved.scrollLeft;
    this.scroller.scrollTop = saved.scrollTop;
    this.panel.scrollTop = saved.panelTop;
    this.restoring = false;
    this.side.top = saved.panelTop;
  }

  dispose() {
    this.zoom.dispose();
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
    this.rowOf = new Map(); // child id -> its row in an expanded group
    for (const col of lay.columns) {
      if (col.dense) this.buildDense(col);
      else for (const item of col.items) this.buildCard(item.id, lay.boxes.get(item.id));
    }
    this.buildEdges();
    this.zoom.apply();
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
    const all = this.lay.children.get(parts.entry.id) || [];
    const kids = this.listed(parts.entry.id);
    if (all.length) {
      const what = kids.length < all.length ? `the first ${kids.length.toLocaleString()} of its ${all.length.toLocaleString()} children` : `the ${all.length.toLocaleString()} children`;
      const toggle = button("bn-toggle", box.open ? "▾" : "▸", box.open ? "Collapse" : `Show ${what}`);
      toggle.addEventListener("click", () => {
        this.toggled.set(parts.entry.id, !box.open);
        this.remember();
        this.rebuild();
      });
      parts.card.querySelector(".bn-r1").appendChild(toggle);
    }
    parts.others = h("div", "bn-r2 bn-others");
    parts.card.insertBefore(parts.others, parts.r3);
    parts.mini = h("div", "bn-mini");
    parts.card.appendChild(parts.mini);
    if (!box.open) return;
    const table = h("div", "bn-kids");
    table.style.maxHeight = `${GROUP_ROWS * ROW_H}px`;
    if (kids.length < all.length) table.title = `The first ${kids.length.toLocaleString()} of ${all.length.toLocaleString()} children (the counts above are of all of them): scroll to see them`;
    else if (kids.length > GROUP_ROWS) table.title = `${kids.length.toLocaleString()} children: scroll to see them all`;
    parts.kids = table;
    parts.rows = new Map();
    for (const kid of kids) {
      const row = h("div", "bn-kid");
      row.dataset.child = kid.id;
      row.title = kid.id;
      const cells = {
        icon: h("span", "bn-icon"),
        label: h("span", "bn-kid-label", childLabel(kid)),
        dur: h("span", "bn-kid-num"),
        tok: h("span", "bn-kid-num"),
        cost: h("span", "bn-kid-num bn-kid-cost"),
      };
      row.append(cells.icon, cells.label, cells.dur, cells.tok, cells.cost);
      table.appendChild(row);
      parts.rows.set(kid.id, { row, ...cells });
      this.rowOf.set(kid.id, { row, table });
    }
    if (kids.length < all.length) {
      const more = all.length - kids.length;
      table.appendChild(h("div", "bn-kid bn-kid-more", `… ${more.toLocaleString()} more, in the counts above`));
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
    this.edgeList = [];
    for (const edge of this.lay.edges) {
      const path = svg("path", { d: edge.d, class: "bn-edge" });
      const { tx, ty } = edge;
      const head = svg("path", { d: `M${tx - 7},${ty - 4} L${tx},${ty} L${tx - 7},${ty + 4}`, class: "bn-arrow" });
      const g = svg("g", {});
      g.append(path, head);
      this.edges.appendChild(g);
      this.edgeList.push({ g, from: edge.from, to: edge.to });
    }
  }

  // ── values: refreshed at most ~10 times a second by the kernel ──
  refresh() {
    const counts = {};
    let total = 0;
    const groups = this.groups;
    for (const g of this.graph) {
      if (g.k === "group") {
        const tally = groups[g.id]; // a tallied map: its children counted there
        if (tally) {
          for (const k in tally.s) {
            counts[k] = (counts[k] || 0) + tally.s[k];
            total += tally.s[k];
          }
        }
        const x = this.st(g.id).x || 0; // a map's items with no child stored yet: pending
        if (x) {
          counts.pending = (counts.pending || 0) + x;
          total += x;
        }
        continue;
      }
      if (g.p !== null && g.p !== undefined && groups[g.p]) continue; // in its map's tally
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
      const title = `${id} — ${s.s}${s.e ? `: ${s.e}` : ""}`;
      if (cell.title !== title) cell.title = title;
    }
    for (const col of this.lay.columns) if (col.dense) this.paintDenseSummary(col);
    for (const edge of this.edgeList) this.paintEdge(edge);
    this.paintHeader();
    this.tick();
    this.panel.hidden = !this.selected;
    if (this.selected) {
      this.askDetail(this.selected);
      this.side.paint();
    }
  }

  aggregate(id) {
    const kids = this.lay.children.get(id) || [];
    const tally = this.groups[id];
    if (tally) return this.tallied(id, tally);
    const agg = { ti: 0, to: 0, c: null, u: 0, n: 0, rp: 0, ch: 0, counts: {} };
    for (const kid of kids) {
      const s = this.st(kid.id);
      agg.ti += s.ti || 0;
      agg.to += s.to || 0;
      agg.n += s.n || 0;
      agg.u += s.u || 0;
      agg.rp += s.rp || 0;
      agg.ch += s.ch || 0;
      agg.c = addCost(agg.c, s.c);
      agg.counts[s.s] = (agg.counts[s.s] || 0) + 1;
    }
    const x = this.st(id).x || 0; // a map's items with no child stored yet: pending
    if (x) agg.counts.pending = (agg.counts.pending || 0) + x;
    agg.total = kids.length + x;
    return agg;
  }

  // A tallied map's counts and sums, as `aggregate` makes them of its children's states.
  tallied(id, tally) {
    const counts = Object.assign({}, tally.s);
    const x = this.st(id).x || 0; // a map's items with no child stored yet: pending
    if (x) counts.pending = (counts.pending || 0) + x;
    const { ti, to, c, u, n, rp, ch } = tally;
    return { ti, to, c, u, n, rp, ch, counts, total: tally.k + x };
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
    if (group) badgeText = this.groupBadge(entry, group);
    else if (s.s === "retryable" || (entry.mx > 1 && s.a > 1)) badgeText = `attempt ${s.a}/${entry.mx}`;
    setText(badge, badgeText);
    setText(stateText, group ? this.groupLine(group, s) : s.s);
    stateText.title = stateText.textContent;
    setText(dur, this.durationOf(s));
    const ti = group ? group.ti : s.ti || 0;
    const to = group ? group.to : s.to || 0;
    const cost = group ? group.c : s.c;
    const unpriced = group ? group.u : s.u || 0;
    const failed = Boolean(s.e) && FAILED.has(s.s);
    let spent = "";
    if (ti + to > 0 || (cost !== null && cost !== undefined) || unpriced) spent = `${fmtTokens(ti + to)} tok · ${fmtCostKnown(cost, unpriced)}`;
    let line = failed ? s.e : spent;
    if (group) {
      // a group: its children in the other states on their own line, else what they spent
      const others = this.groupOthers(group);
      const second = others || (failed ? "" : spent);
      setText(parts.others, second);
      parts.others.title = second;
      if (!failed) line = others ? spent : "";
    }
    setText(r3, line);
    setClass(r3, `bn-r3${failed ? " bn-err" : ""}`);
    r3.title = s.e || "";
    if (group) this.paintGroup(parts, group);
  }

  groupBadge(entry, group) {
    const kids = this.lay.children.get(entry.id) || [];
    if (!kids.length) {
      // a map whose items are not known yet (models are known from the start)
      const source = entry.d.length === 1 ? entry.d[0] : null;
      return source ? `map over ${source}` : "map";
    }
    return `${group.total.toLocaleString()} ${kids.every((k) => k.m) ? "models" : "items"}`;
  }

  groupLine(group, s) {
    if (!group.total) return `${s.s} · items not known yet`;
    return `${(group.counts.completed || 0).toLocaleString()}/${group.total.toLocaleString()} completed`;
  }

  // The children in the other states (but pending): "1 discarded · 901 cancelled".
  groupOthers(group) {
    return SHOWN.slice(1, -1)
      .filter((k) => group.counts[k])
      .map((k) => `${group.counts[k].toLocaleString()} ${k}`)
      .join(" · ");
  }

  paintGroup(parts, group) {
    const segs = SHOWN.filter((k) => group.counts[k]).map((k) => `<i class="st-${k}" style="flex:${group.counts[k]}"></i>`);
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
      setText(cells.dur, this.durationOf(s));
      setText(cells.tok, s.ti || s.to ? `${fmtTokens((s.ti || 0) + (s.to || 0))} tok` : "");
      setText(cells.cost, s.n ? fmtCostKnown(s.c, s.u) : s.e ? s.s : "");
    }
  }

  paintDenseSummary(col) {
    const c = {};
    for (const id of col.ids) {
      const s = this.st(id).s;
      c[s] = (c[s] || 0) + 1;
    }
    const html = SHOWN.filter((k) => c[k])
      .map((k) => `<span class="bn-chip st-${k}"><i></i>${c[k].toLocaleString()} ${k}</span>`)
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

  // Wall-clock: from the first start to the end (or to now, while it goes).
  durationOf(s) {
    if (s.t0 && s.t1) return fmtSeconds((s.t1 - s.t0) / 1000);
    if (s.t0 && !TERMINAL.has(s.s)) return fmtSeconds(this.now() - s.t0 / 1000);
    return "";
  }

  paintHeader() {
    const hd = this.header;
    const status = hd.status || "loading";
    this.root.dataset.status = status;
    setClass(this.dot, `bn-dot run-${status}`);
    setText(this.wfName, hd.wf || "");
    setText(this.runId, hd.id || "");
    this.copyBtn.hidden = !hd.id;
    setClass(this.pill, `bn-pill run-${status}`);
    setText(this.pill, status === "taken_over" ? "taken over" : status);
    const gone = this.goneAt > 0;
    if (!gone) {
      delete this.root.dataset.disconnected;
    } else {
      this.root.dataset.disconnected = "1";
      if (status === "running" || status === "pending") {
        setClass(this.dot, "bn-dot run-disconnected");
        setClass(this.pill, "bn-pill run-disconnected");
        setText(this.pill, "disconnected");
      }
    }
    const done = this.counts.completed || 0;
    setText(this.stat.steps, `${done.toLocaleString()}/${this.total.toLocaleString()}`);
    this.stat.steps.parentNode.title = `${countsText(this.counts, this.total)} steps (a fan-out group is not a step: its children are)`;
    const ti = hd.ti || 0;
    const to = hd.to || 0;
    setText(this.stat.tokens, fmtTokens(ti + to));
    this.stat.tokens.parentNode.title = `${ti.toLocaleString()} in, ${to.toLocaleString()} out`;
    setText(this.stat.cost, fmtCostKnown(hd.cost ?? "0", hd.unpriced));
    this.stat.cost.parentNode.title = hd.unpriced
      ? `$${hd.cost || 0} for the priced calls, + ${hd.unpriced} call(s) of unknown price`
      : hd.cost
        ? `$${hd.cost} (exact)`
        : "";
    const segs = SHOWN.filter((k) => this.counts[k]).map(
      (k) => `<i class="st-${k}" style="flex:${this.counts[k]}" title="${this.counts[k]} ${k}"></i>`,
    );
    const bar = segs.join("");
    if (this.barHtml !== bar) {
      this.bar.innerHTML = bar;
      this.barHtml = bar;
    }
    const chips = SHOWN.filter((k) => this.counts[k])
      .map((k) => {
        const jump = JUMPABLE.has(k) ? ` data-jump="${k}" role="button" tabindex="0" title="Show the next ${k} step"` : "";
        return `<span class="bn-chip st-${k}${jump ? " bn-jump" : ""}"${jump}><i></i>${this.counts[k].toLocaleString()} ${k}</span>`;
      })
      .join("");
    const chipsHtml = `${chips}<span class="bn-of">of ${this.total.toLocaleString()} steps</span>`;
    if (this.chipsHtml !== chipsHtml) {
      this.chips.innerHTML = chipsHtml;
      this.chipsHtml = chipsHtml;
    }
    const running = status === "running" || status === "pending";
    this.cancelBtn.hidden = !(this.live && hd.cancellable && running && !gone);
    const cancelling = hd.cancelling || this.cancelAt > 0;
    this.cancelBtn.disabled = cancelling;
    setText(this.cancelBtn, cancelling ? "Cancelling…" : "Cancel");
    this.paintBanner();
    this.paintBatches();
  }

  // Provider batches (DESIGN §12): one line each, what the provider says of it and the saving.
  paintBatches() {
    const batches = this.header.batches || [];
    const html = goneLine(this.goneAt > 0, this.header) + takenLine(this.header) + noticeLine(this.header) + spendLine(this.header) + batches.map(batchLine).join("");
    if (this.batchesHtml === html) return;
    this.batchesHtml = html;
    this.batchLines.hidden = !html;
    this.batchLines.innerHTML = html;
  }

  // The discarded steps, in graph order, with their errors: each opens its node.
  paintBanner() {
    // A group's failure is its children's: it is listed only when none of them is.
    const failedChild = new Set(this.graph.filter((g) => g.k === "child" && this.st(g.id).s === "discarded").map((g) => g.p));
    const failures = this.graph.filter((g) => this.st(g.id).s === "discarded" && !(g.k === "group" && failedChild.has(g.id)));
    this.errorLine.hidden = !failures.length;
    const key = failures.map((g) => `${g.id}\u0000${this.st(g.id).e || ""}`).join("\u0001");
    if (this.bannerKey === key) return;
    this.bannerKey = key;
    const box = this.errorLine;
    box.replaceChildren();
    if (!failures.length) return;
    box.appendChild(h("span", "bn-failure-count", "✕ discarded:"));
    for (const g of failures.slice(0, 3)) {
      const link = button("bn-failure-item", "", `Show ${g.id}`);
      link.dataset.id = g.id;
      link.append(h("b", "", g.id), document.createTextNode(`: ${this.st(g.id).e || "no error recorded"}`));
      box.appendChild(link);
    }
    if (failures.length > 3) {
      const more = button("bn-failure-more", `+${(failures.length - 3).toLocaleString()} more`, "Show the next discarded step");
      more.dataset.jump = "discarded";
      box.appendChild(more);
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

  // ── finding a node: the banner, the count chips ──
  jumpToNext(state) {
    // A tallied map's children are only counted (but the discarded ones): the map stands
    // for those in the state.
    const groups = this.groups;
    const discarded = state === "discarded";
    const ids = [];
    for (const g of this.graph) {
      const tally = g.k === "group" ? groups[g.id] : undefined;
      if (tally && !discarded && tally.s[state]) ids.push(g.id);
      else if (g.k === "group" && !discarded) continue;
      else if (g.k === "child" && !discarded && groups[g.p]) continue;
      else if (this.st(g.id).s === state) ids.push(g.id);
    }
    if (!ids.length) return;
    const last = this.jumps[state] ?? -1;
    const next = (last + 1) % ids.length;
    this.jumps[state] = next;
    this.jumpTo(ids[next]);
  }

  jumpTo(id) {
    const entry = this.entries.get(id);
    if (!entry) return;
    // open the group to show the child (a tallied map's child it does not list: the
    // group's card stands for it)
    if (entry.k === "child" && entry.p && this.cards.has(entry.p) && !this.rowOf.has(id) && this.isListed(entry)) {
      this.toggled.set(entry.p, true);
      this.rebuild();
    }
    this.open(id);
    const target = this.elementOf(id);
    if (!target) return;
    const row = this.rowOf.get(id);
    if (row) {
      const { table } = row;
      table.scrollTop = row.row.offsetTop - table.offsetTop - (table.clientHeight - row.row.offsetHeight) / 2;
    }
    const sc = this.scroller.getBoundingClientRect();
    const r = target.getBoundingClientRect();
    this.scroller.scrollLeft += r.left + r.width / 2 - (sc.left + sc.width / 2);
    this.scroller.scrollTop += r.top + r.height / 2 - (sc.top + sc.height / 2);
    target.classList.remove("bn-flash");
    void target.offsetWidth; // restart the animation
    target.classList.add("bn-flash");
    this.remember();
  }

  elementOf(id) {
    const row = this.rowOf.get(id);
    if (row) return row.row;
    if (this.cards.has(id)) return this.cards.get(id).card;
    if (this.cells.has(id)) return this.cells.get(id);
    const entry = this.entries.get(id);
    if (entry && entry.p && this.cards.has(entry.p)) return this.cards.get(entry.p).card;
    if (entry && entry.p && this.cells.has(entry.p)) return this.cells.get(entry.p);
    return null;
  }

  // ── side panel ──
  select(id) {
    if (this.selected === id) {
      this.selected = null;
      this.remember();
      this.refresh();
      return;
    }
    this.open(id);
  }

  open(id) {
    if (this.selected !== id) this.side.top = 0;
    this.selected = id;
    this.askDetail(id);
    this.remember();
    this.refresh();
  }

  // Details come from the kernel (or the snapshot) once per change of the node: a step
  // that finished since its panel opened gets its result, calls and context.
  askDetail(id) {
    const s = this.st(id);
    const stamp = `${s.s}|${s.a}|${s.n}|${s.r}`;
    if (this.asked.get(id) === stamp) return;
    if (!this.live && this.asked.has(id)) return;
    this.asked.set(id, stamp);
    this.model.send({ type: "detail", id });
  }

  onMessage(msg) {
    if (msg && msg.type === "detail") {
      this.detailsCache.set(msg.id, msg.detail);
      if (msg.id === this.selected) this.side.paint();
    }
  }

  // ── the run id ──
  copyId() {
    const id = this.header.id || "";
    const done = () => {
      setText(this.copyBtn, "copied ✓");
      setTimeout(() => setText(this.copyBtn, "copy"), 1500);
    };
    const fallback = () => {
      // Outside a secure context there is no clipboard API: select the id and copy it.
      const range = document.createRange();
      range.selectNodeContents(this.runId);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      try {
        document.execCommand("copy");
        done();
      } catch (_) {
        setText(this.copyBtn, "selected: Ctrl+C");
      }
    };
    if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(id).then(done, fallback);
    else fallback();
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
    this.goneAt = 0; // (as onValues)
    this.load();
    this.rebuild();
  }

  onValues() {
    this.goneAt = 0; // updates arrive: the kernel is there (a comm_live_update was not a loss)
    this.load();
    this.refresh();
  }

  // The widget's kernel connection is gone (ipywidgets sets the model's comm_live to false
  // on a kernel restart): the run no longer reports here, so the clock stops, Cancel goes
  // and a line says what to do.
  onConnection(live) {
    if (live || this.goneAt) return;
    this.tick();
    this.goneAt = this.now();
    this.refresh();
  }
}

// The side panel of the selected node: facts, error, children, result, LLM calls and
// captured context. Repainted when the node changes, keeping its scroll position.
class SidePanel {
  constructor(view, node) {
    this.view = view;
    this.node = node;
    this.key = null; // what was painted last
    this.top = null; // a scroll position to restore at the next paint
  }

  paint() {
    const v = this.view;
    const id = v.selected;
    const entry = v.entries.get(id);
    if (!entry) return;
    const s = v.st(id);
    const detail = v.detailsCache.get(id);
    const key = JSON.stringify([id, s, !!detail, v.header.status, v.groups[id] || null]);
    if (this.key === key) return;
    this.key = key;
    const panel = this.node;
    const top = this.top ?? panel.scrollTop;
    v.restoring = true;
    panel.replaceChildren();
    const head = h("div", "bn-panel-head");
    const icon = h("span", `bn-icon st-${s.s}`, GLYPH[s.s] || "");
    const title = h("span", "bn-panel-title", id);
    title.title = id;
    const close = button("bn-close", "×", "Close");
    close.addEventListener("click", () => v.select(id));
    head.append(icon, title, close);
    panel.appendChild(head);
    panel.appendChild(this.facts(entry, s));
    if (s.e || (detail && detail.error)) {
      panel.appendChild(this.section("Error", h("div", "bn-pre bn-pre-error", (detail && detail.error) || s.e)));
    }
    if (entry.k === "group") panel.appendChild(this.section("Children", this.childTable(id)));
    if (!detail) {
      panel.appendChild(h("div", "bn-muted bn-pad", v.live ? "Loading details…" : "Details were not saved with this snapshot."));
    } else {
      if (detail.ran_on) panel.appendChild(this.section("Ran on worker", h("div", "bn-pre", detail.ran_on)));
      if (detail.result !== null && detail.result !== undefined) {
        panel.appendChild(this.section("Result", h("div", "bn-pre", detail.result)));
      }
      if (detail.attempts && detail.attempts.length) panel.appendChild(this.section("Attempts", this.attemptTable(detail.attempts)));
      if (detail.calls && detail.calls.length) panel.appendChild(this.section("LLM calls", this.callTable(detail.calls)));
      if (entry.k !== "group") panel.appendChild(this.section("Captured context", this.contextList(detail.context || [], s)));
    }
    panel.scrollTop = top;
    this.top = null;
    v.restoring = false;
  }

  facts(entry, s) {
    const v = this.view;
    const grid = h("div", "bn-facts");
    const row = (k, text, hint) => {
      if (text === "" || text === null || text === undefined) return;
      const value = h("div", "bn-v", text);
      if (hint) value.title = hint;
      grid.append(h("div", "bn-k", k), value);
    };
    row("State", s.s);
    if (entry.k !== "group") row("Attempts", `${s.a || 0} of ${entry.mx}`);
    if (entry.m) row("Model", entry.m);
    if (entry.i !== null && entry.i !== undefined) row("Item", `#${entry.i}`);
    if (s.t0) row("Started", new Date(s.t0).toLocaleTimeString());
    row("Duration", v.durationOf(s), "Wall-clock, from the first start to the end (retries included)");
    const agg = entry.k === "group" ? v.aggregate(entry.id) : s;
    if ((agg.ti || 0) + (agg.to || 0)) row("Tokens", `${(agg.ti || 0).toLocaleString()} in · ${(agg.to || 0).toLocaleString()} out`);
    if (agg.n || agg.u) {
      const unpriced = agg.u ? ` (+ ${agg.u} call${agg.u > 1 ? "s" : ""} of unknown price)` : "";
      row("Cost", `${fmtCostKnown(agg.c, agg.u)}${unpriced}`);
    }
    // paid calls, as show, runs and report count them; replays (not charged again) and
    // answers from the response cache (nothing bought) apart
    if (agg.n) {
      const rp = agg.rp || 0;
      const ch = agg.ch || 0;
      const apart = [rp ? `+ ${rp} replayed, not charged again` : "", ch ? `+ ${ch} from the cache` : ""];
      const more = apart.filter(Boolean).join(", ");
      row("LLM calls", `${(agg.n - rp - ch).toLocaleString()}${more ? ` (${more})` : ""}`);
    }
    return grid;
  }

  section(title, content) {
    const box = h("div", "bn-section");
    box.append(h("div", "bn-section-title", title), content);
    return box;
  }

  // One grid per table (rows are `display: contents`): every column is as wide as its
  // widest cell, so numbers are never clipped; only the first column shrinks.
  // Div grids, not <table>: notebook HTML styles (tables, pre) must not restyle the panel.
  table(cls, headers, rows, onRow) {
    const box = h("div", `bn-table ${cls}`);
    const line = (cells, rowCls) => {
      const tr = h("div", rowCls);
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
    const v = this.view;
    const all = v.lay.children.get(id) || [];
    const kids = v.listed(id).slice(0, PANEL_KIDS);
    const rows = kids.map((k) => {
      const s = v.st(k.id);
      return [childLabel(k), s.s, v.durationOf(s), fmtTokens((s.ti || 0) + (s.to || 0)), s.n ? fmtCostKnown(s.c, s.u) : ""];
    });
    const table = this.table("bn-t-kids", ["child", "state", "duration", "tokens", "cost"], rows, (i) => v.jumpTo(kids[i].id));
    if (kids.length === all.length) return table;
    const box = h("div");
    const more = `The first ${kids.length.toLocaleString()} of ${all.length.toLocaleString()} children; the facts above count all of them.`;
    box.append(table, h("div", "bn-muted bn-pad bn-kids-more", more));
    return box;
  }

  // Each attempt that failed (and the one that completed after them): how it ended,
  // how long it took, its error.
  attemptTable(attempts) {
    const rows = attempts.map((a) => [a.n, a.s, fmtLatency(a.d * 1000), a.e || ""]);
    return this.table("bn-t-attempts", ["try", "ended", "time", "error"], rows);
  }

  callTable(calls) {
    const rows = calls.map((c) => [
      shortModel(c.m) + (c.rp ? " (replayed)" : c.ch ? " (from the cache)" : c.na ? " (no answer, counted at worst case)" : ""),
      c.a,
      fmtTokens(c.ti),
      fmtTokens(c.to),
      c.na ? "" : fmtLatency(c.l),
      c.c === null || c.c === undefined ? "unknown" : fmtCost(c.c),
    ]);
    return this.table("bn-t-calls", ["model", "try", "in", "out", "latency", "cost"], rows);
  }

  contextList(entries, s) {
    const box = h("div", "bn-context");
    if (!entries.length) {
      // Say what is known: debug=True records the request of every LLM call made.
      const text = s.n
        ? "Prompts and responses were not kept for this step: run it with debug=True (on the workflow or the step) to keep them."
        : "Nothing captured: this step made no LLM call and logged nothing (ctx.log() lines show here).";
      box.appendChild(h("div", "bn-muted", text));
      return box;
    }
    for (const e of entries) {
      const item = h("div", `bn-ctx bn-ctx-${e.k}`);
      item.append(h("span", "bn-ctx-kind", `${e.k}${e.a ? ` · attempt ${e.a}` : ""}`), h("div", "bn-pre", e.t));
      box.appendChild(item);
    }
    return box;
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

// The node states of a model, one object shared by its views: `nodes` (sent in full at first)
// with every `changed` since merged in. It holds the nodes changed since the previous send
// only, so the kernel's cost per redraw follows what changed, not the run's size; a view
// opened later starts from `nodes`, which the kernel keeps current (unsent) for it, and the
// last `changed` (already in it: merging it again changes nothing). `patch` (older kernels:
// only the fields that changed) is merged the same way.
const NODE_STATES = new WeakMap();

export function mergePatch(states, patch) {
  for (const id in patch) states[id] = Object.assign({}, states[id] || NEVER_SENT, patch[id]);
  return states;
}

// `changed`: each node's state in full, as columns; it replaces the node's.
export function mergeChanged(states, changed) {
  if (changed && changed.id) {
    const nodes = fromColumns(changed, "id");
    changed.id.forEach((id, i) => (states[id] = nodes[i]));
  }
  return states;
}

function nodeStates(model) {
  let states = NODE_STATES.get(model);
  if (states === undefined) {
    const merged = () =>
      mergeChanged(
        mergePatch(Object.assign({}, model.get("nodes") || {}), model.get("patch") || {}),
        model.get("changed"),
      );
    states = merged();
    NODE_STATES.set(model, states);
    // registered before any view's listeners: the states are current when a view redraws
    model.on("change:nodes", () => NODE_STATES.set(model, merged()));
    model.on("change:patch", () => mergePatch(NODE_STATES.get(model), model.get("patch") || {}));
    model.on("change:changed", () => mergeChanged(NODE_STATES.get(model), model.get("changed")));
  }
  return states;
}

// The graph of a model, one array shared by its views: `graph` (sent in full at first) with
// every `grown` since appended. The kernel keeps `graph` current (unsent) for a view opened
// later, whose `graph` then already holds the last `grown`: appended only where it follows.
const GRAPHS = new WeakMap();

export function growGraph(graph, grown) {
  if (grown && grown.add && grown.at === graph.length) for (const g of entries(grown.add)) graph.push(g);
  return graph;
}

// Entries sent as columns (_state.columns): {key: [the value of each entry] | {all: the value
// of every entry}}, `id` always a list. A map's children share most fields: under half the
// JSON of an object per entry. Entries as an array (older kernels, saved states) pass as is.
// `without`: a key left out of the entries (the ids of node states, which key them).
export function fromColumns(cols, without) {
  const ids = cols.id || [];
  const keys = Object.keys(cols).filter((key) => key !== without);
  const lists = keys.map((key) => column(cols[key], ids.length));
  const same = keys.map((key) => (Array.isArray(cols[key]) ? undefined : cols[key].all));
  const out = new Array(ids.length);
  for (let i = 0; i < ids.length; i++) {
    const entry = {};
    for (let k = 0; k < keys.length; k++) entry[keys[k]] = lists[k] ? lists[k][i] : same[k];
    out[i] = entry;
  }
  return out;
}

// A column as sent (`_state.encode_column`): its list of values; {all: v}, every entry's
// value (null here: read as one value); or {all: v, at: [positions], v: [values]}, every
// entry's value but at those positions.
function column(col, size) {
  if (Array.isArray(col)) return col;
  if (!col.at) return null;
  const values = new Array(size).fill(col.all);
  for (let k = 0; k < col.at.length; k++) values[col.at[k]] = col.v[k];
  return values;
}

function entries(list) {
  return Array.isArray(list) ? list : fromColumns(list || {});
}

function modelGraph(model) {
  let graph = GRAPHS.get(model);
  if (graph === undefined) {
    const full = () => growGraph(entries(model.get("graph")).slice(), model.get("grown"));
    graph = full();
    GRAPHS.set(model, graph);
    // registered before any view's listeners: the graph is current when a view redraws
    model.on("change:graph", () => GRAPHS.set(model, full()));
    model.on("change:grown", () => growGraph(GRAPHS.get(model), model.get("grown")));
  }
  return graph;
}

function mount(model, el, live) {
  const view = new DagView(model, el, { live });
  const onGraph = () => view.onGraph();
  const onValues = () => view.onValues();
  const onMsg = (msg) => view.onMessage(msg);
  // anywidget's model proxy has no comm_live: the event alone says the comm went down (it is
  // only ever set back to true when a model is made); a host passing the model itself is read.
  const onLive = () => view.onConnection(model.comm_live === true);
  model.on("change:graph", onGraph);
  model.on("change:grown", onGraph);
  model.on("change:nodes", onValues);
  model.on("change:patch", onValues);
  model.on("change:changed", onValues);
  model.on("change:header", onValues);
  model.on("change:groups", onValues);
  model.on("msg:custom", onMsg);
  model.on("comm_live_update", onLive);
  const timer = setInterval(() => {
    const status = view.header.status;
    if (view.root.isConnected && !view.goneAt && (status === "running" || status === "pending")) view.tick();
  }, 500);
  return () => {
    clearInterval(timer);
    view.dispose();
    model.off("change:graph", onGraph);
    model.off("change:grown", onGraph);
    model.off("change:nodes", onValues);
    model.off("change:patch", onValues);
    model.off("change:changed", onValues);
    model.off("change:header", onValues);
    model.off("change:groups", onValues);
    model.off("msg:custom", onMsg);
    model.off("comm_live_update", onLive);
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

// A saved snapshot's state: its graph as columns or an array of entries, its node states as
// columns (`states`) or, in older snapshots, an object of node states (`nodes`).
export function savedState(state) {
  const out = Object.assign({}, state, { graph: entries(state.graph) });
  if (state.states) {
    // no ids: the states are the graph's nodes, in its order (the widget's snapshots)
    const ids = state.states.id || out.graph.map((entry) => entry.id);
    out.nodes = mergeChanged({}, Object.assign({}, state.states, { id: ids }));
    delete out.states;
  }
  return out;
}

export function renderStatic(el, state) {
  el.querySelectorAll(".bn-fallback").forEach((node) => node.remove());
  return mount(staticModel(savedState(state)), el, false);
}

function render({ model, el }) {
  return mount(model, el, true);
}

// Once per model, when the kernel's widget reaches the page (before any view, which may
// come much later: a widget displayed after its run grew, an output drawn late): the
// graph and the node states follow every `grown` and `changed` from then on, so a view
// opened at any time draws them whole.
export function initialize({ model }) {
  modelGraph(model);
  nodeStates(model);
}

export default { initialize, render };

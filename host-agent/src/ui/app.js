// The web page of a running `lks up`: follows /api/events (a snapshot, then
// deltas) and renders every service in a table grouped by alias, and the
// logs of one service or of all. Actions POST to /api/ACTION with the run's
// token, which the server put in this page's <meta name="lks-token">.
"use strict";

const TOKEN = document.querySelector('meta[name="lks-token"]').content;
const ALL_LINES = 20000;      // lines of all services kept in the page
const SHOWN_LINES = 1500;     // lines in the log view, at most
const NO_GROUP = "services";  // the group of services in no alias

const $ = (id) => document.getElementById(id);
const page = {
  services: new Map(),  // name -> service state, as /api/state gives it
  order: [],            // names, in launch order
  rows: new Map(),      // name -> {tr, cells}
  groups: new Map(),    // group -> {tr, names}
  collapsed: new Set(),
  selected: null,       // the row the keyboard acts on
  logOf: null,          // whose logs are shown (null: every service)
  all: [],              // lines of every service
  view: [],             // lines of the shown service (logOf)
  onlyErrors: false,
  // What the page did, and its longest work of each kind (ms): for tests
  // and the benchmark.
  stats: { snapshots: 0, deltas: 0, lines: 0, lastDelta: 0, painted: 0, longest: {} },
};
window.lksPage = page;  // for tests and benchmarks

// ---- the stream -------------------------------------------------------

/// Runs `f`, keeping the longest time it took under `what`.
function timed(what, f) {
  const t = performance.now();
  try {
    return f();
  } finally {
    const ms = performance.now() - t;
    if (!(page.stats.longest[what] >= ms)) page.stats.longest[what] = ms;
  }
}

function connect() {
  const es = new EventSource("/api/events?token=" + encodeURIComponent(TOKEN));
  es.addEventListener("snapshot", (e) => timed("snapshot", () => onSnapshot(JSON.parse(e.data))));
  es.addEventListener("delta", (e) => timed("delta", () => onDelta(JSON.parse(e.data))));
  es.addEventListener("end", () => {
    es.close();
    connection("the run ended", "down");
  });
  es.onopen = () => connection("live", "live");
  es.onerror = () => {
    if (es.readyState !== EventSource.CLOSED) connection("disconnected: reconnecting", "down");
  };
}

function connection(text, kind) {
  const c = $("connection");
  c.textContent = text;
  c.className = "connection " + kind;
}

function onSnapshot(snap) {
  page.stats.snapshots++;
  page.services = new Map(snap.services.map((s) => [s.name, s]));
  page.order = snap.services.map((s) => s.name);
  page.all = snap.lines;
  buildTable();
  showLogs(page.logOf && page.services.has(page.logOf) ? page.logOf : null);
  summarize();
  if (!page.stats.painted) {
    // After the next frame is painted: when the page is usable.
    requestAnimationFrame(() => setTimeout(() => (page.stats.painted = performance.now())));
  }
}

function onDelta(delta) {
  page.stats.deltas++;
  page.stats.lastDelta = performance.now();
  let rebuild = false;
  for (const s of delta.services) {
    const old = page.services.get(s.name);
    if (!old || old.group !== s.group) rebuild = true;
    page.services.set(s.name, s);
  }
  if (delta.order && delta.order.join("\n") !== page.order.join("\n")) {
    for (const name of page.order) if (!delta.order.includes(name)) page.services.delete(name);
    page.order = delta.order;
    rebuild = true;
  }
  if (rebuild) buildTable();
  else for (const s of delta.services) fillRow(s.name);
  if (delta.services.length) summarize();
  if (delta.lines.length || delta.skipped) addLines(delta.lines, delta.skipped);
}

// ---- the table --------------------------------------------------------

function groupOf(s) {
  return s.group || NO_GROUP;
}

function buildTable() {
  const body = $("rows");
  const groups = new Map();
  for (const name of page.order) {
    const s = page.services.get(name);
    if (!s) continue;
    const g = groupOf(s);
    if (!groups.has(g)) groups.set(g, []);
    groups.get(g).push(name);
  }
  const grouped = groups.size > 1 || !groups.has(NO_GROUP);
  const frag = document.createDocumentFragment();
  page.rows.clear();
  page.groups.clear();
  for (const [g, names] of groups) {
    let header = null;
    if (grouped) {
      header = el("tr", "group");
      header.dataset.group = g;
      const td = el("td");
      td.colSpan = 7;
      header.append(td);
      header.addEventListener("click", () => toggleGroup(g));
      frag.append(header);
      page.groups.set(g, { tr: header, names });
    }
    for (const name of names) {
      const row = makeRow(name);
      page.rows.set(name, row);
      frag.append(row.tr);
      fillRow(name);
    }
    if (header) fillGroup(g);
  }
  body.replaceChildren(frag);
  applyVisibility();
  if (page.selected && !page.rows.has(page.selected)) page.selected = null;
  markSelected();
}

function makeRow(name) {
  const tr = el("tr", "service");
  tr.dataset.service = name;
  const cells = {};
  for (const c of ["name", "update", "runtime", "where", "endpoints", "age", "actions"]) {
    cells[c] = el("td", c);
    tr.append(cells[c]);
  }
  cells.name.textContent = name;
  for (const [action, label, title] of [
    ["trigger", "Trigger", "Update now: what waits, or a full sync, build and start (t)"],
    ["restart", "Restart", "Restart the app alone (r)"],
    ["disable", "Disable", "Stop it and what it started, until enabled (d)"],
    ["manual", "Manual", "Manual trigger mode: changes wait until triggered (m)"],
  ]) {
    const b = el("button");
    b.dataset.action = action;
    b.textContent = label;
    b.title = title;
    b.addEventListener("click", (e) => {
      e.stopPropagation();
      act(b.dataset.action, name);
    });
    cells.actions.append(b);
  }
  tr.addEventListener("click", () => {
    select(name);
    showLogs(name);
  });
  return { tr, cells };
}

/// The badge class of an update or runtime phase.
function tone(phase) {
  switch (phase) {
    case "ok": case "ready": return "ok";
    case "error": case "crash loop": return "error";
    case "stopped": case "disabled": case "pending": case "waiting for deps": return "off";
    default: return "busy";
  }
}

function hasError(s) {
  return s.update === "error" || s.runtime === "crash loop" || s.runtime === "error";
}

function fillRow(name) {
  const row = page.rows.get(name);
  const s = page.services.get(name);
  if (!row || !s) return;
  const c = row.cells;
  row.tr.classList.toggle("has-error", hasError(s));
  // Update: its phase, and what the last sync did, or what failed.
  let detail = "";
  let title = s.status;
  if (s.waiting > 0) detail = s.waiting + " change(s) wait for a trigger";
  else if (s.update === "error" && s.last_error) detail = s.last_error;
  else if (s.last_sync) {
    const ls = s.last_sync;
    detail = ls.ms + " ms";
    if (ls.paths && ls.paths.length) {
      detail += " · " + ls.paths.slice(0, 3).join(", ") + (ls.files > 3 ? " …" : "");
      title = ls.paths.join("\n");
    } else if (ls.files) detail += " · " + ls.files + " files";
  }
  setCell(c.update, s.update, detail, title);
  let rdetail = s.restarts ? "↻ " + s.restarts : "";
  setCell(c.runtime, s.runtime, rdetail, s.status);
  const pid = s.app_pid || s.agent_pid;
  c.where.textContent = [s.location, pid ? "pid " + pid : ""].filter(Boolean).join(" · ");
  c.where.title = c.where.textContent;
  if (c.endpoints.dataset.was !== s.endpoints.join(" ")) {
    c.endpoints.dataset.was = s.endpoints.join(" ");
    c.endpoints.replaceChildren(...s.endpoints.map((u) => {
      const a = el("a");
      a.href = u;
      a.target = "_blank";
      a.rel = "noopener";
      a.textContent = u.replace(/^http:\/\/127\.0\.0\.1/, "").replace(/\/$/, "") || u;
      return a;
    }));
  }
  c.age.textContent = age(s.started_ms);
  const disabled = s.runtime === "disabled";
  const d = c.actions.querySelector('[data-action="disable"], [data-action="enable"]');
  d.dataset.action = disabled ? "enable" : "disable";
  d.textContent = disabled ? "Enable" : "Disable";
  const m = c.actions.querySelector('[data-action="manual"], [data-action="auto"]');
  m.dataset.action = s.manual ? "auto" : "manual";
  m.classList.toggle("on", s.manual);
  m.title = s.manual ? "Manual mode is on: click to apply changes as they come" : "Manual trigger mode: changes wait until triggered (m)";
  const g = page.groups.get(groupOf(s));
  if (g) fillGroup(groupOf(s));
  if (page.onlyErrors) applyVisibility();
}

function setCell(td, phase, detail, title) {
  let badge = td.firstChild;
  if (!badge) {
    badge = el("span", "badge");
    td.append(badge, el("span", "detail"));
  }
  badge.textContent = phase;
  badge.className = "badge " + tone(phase);
  td.lastChild.textContent = detail;
  td.title = title || "";
}

function fillGroup(g) {
  const group = page.groups.get(g);
  const ss = group.names.map((n) => page.services.get(n)).filter(Boolean);
  const ready = ss.filter((s) => s.runtime === "ready").length;
  const errors = ss.filter(hasError).length;
  const td = group.tr.firstChild;
  td.textContent = "";
  const arrow = el("span", "arrow");
  arrow.textContent = page.collapsed.has(g) ? "▸" : "▾";
  const label = el("span");
  label.textContent = g + " — " + ready + "/" + ss.length + " ready";
  td.append(arrow, label);
  if (errors) {
    const e = el("span", "detail error");
    e.textContent = "· " + errors + " error" + (errors > 1 ? "s" : "");
    td.append(e);
  }
}

function toggleGroup(g) {
  if (page.collapsed.has(g)) page.collapsed.delete(g);
  else page.collapsed.add(g);
  fillGroup(g);
  applyVisibility();
}

function applyVisibility() {
  const filter = $("filter").value.trim().toLowerCase();
  for (const [name, row] of page.rows) {
    const s = page.services.get(name);
    const hidden = page.collapsed.has(groupOf(s))
      || (filter && !name.toLowerCase().includes(filter))
      || (page.onlyErrors && !hasError(s));
    row.tr.hidden = hidden;
  }
}

function summarize() {
  const ss = [...page.services.values()];
  const ready = ss.filter((s) => s.runtime === "ready").length;
  const errors = ss.filter(hasError).length;
  $("summary").textContent = ready + "/" + ss.length + " ready";
  const e = $("errors");
  e.textContent = errors + (errors === 1 ? " error" : " errors");
  e.classList.toggle("has", errors > 0);
  document.title = (errors ? "✖ " + errors + " · " : "") + ready + "/" + ss.length + " · lks";
}

function age(ms) {
  if (!ms) return "";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m";
  if (s < 86400) return Math.floor(s / 3600) + "h" + String(Math.floor((s % 3600) / 60)).padStart(2, "0");
  return Math.floor(s / 86400) + "d";
}

function select(name) {
  page.selected = name;
  markSelected();
}

function markSelected() {
  for (const [name, row] of page.rows) row.tr.classList.toggle("selected", name === page.selected);
}

// ---- actions ----------------------------------------------------------

async function act(action, name) {
  try {
    const r = await fetch("/api/" + action + "?service=" + encodeURIComponent(name), {
      method: "POST",
      headers: { Authorization: "Bearer " + TOKEN },
    });
    const body = await r.json();
    toast(name + ": " + (r.ok ? body.done : body.error), !r.ok);
  } catch (e) {
    toast(name + ": " + action + " failed: " + e, true);
  }
}

let toastTimer = 0;
function toast(text, bad) {
  const t = $("toast");
  t.textContent = text;
  t.className = bad ? "bad" : "";
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (t.hidden = true), 4000);
}

// ---- logs -------------------------------------------------------------

const ERROR = /\b(error|errors|fatal|panic|panicked|failed|exception|traceback)\b/i;
const WARN = /\bwarn(ing)?\b/i;

function level(line) {
  if (ERROR.test(line.text)) return "error";
  if (WARN.test(line.text)) return "warn";
  return "info";
}

/// What the filters let through, as a function of a line; and the search.
function filters() {
  const sources = new Set([...document.querySelectorAll(".source:checked")].map((c) => c.value));
  const lvl = $("level").value;
  const text = $("search").value;
  let search = null;
  $("search").classList.remove("bad");
  if (text) {
    if ($("regex").checked) {
      try {
        search = new RegExp(text, "gi");
      } catch (e) {
        $("search").classList.add("bad");
        $("search").title = String(e);
      }
    } else {
      search = new RegExp(text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"), "gi");
    }
  }
  const pass = (line) => {
    if (!sources.has(line.source)) return false;
    if (lvl !== "all") {
      const l = level(line);
      if (lvl === "error" ? l !== "error" : l === "info") return false;
    }
    if (search) {
      search.lastIndex = 0;
      if (!search.test(line.text)) return false;
    }
    return true;
  };
  return { pass, search };
}

async function showLogs(name) {
  page.logOf = name;
  $("log-title").textContent = name ? name : "All services";
  if (!name) {
    page.view = page.all;
    return renderLog();
  }
  page.view = page.all.filter((l) => l.service === name);
  renderLog();
  // Its whole history (the page keeps only the newest lines of all).
  try {
    const r = await fetch("/api/logs?service=" + encodeURIComponent(name) + "&tail=2000", {
      headers: { Authorization: "Bearer " + TOKEN },
    });
    const got = (await r.json()).lines || [];
    if (page.logOf !== name) return;
    const last = got.length ? got[got.length - 1].seq : 0;
    page.view = got.concat(page.view.filter((l) => l.seq > last));
    renderLog();
  } catch (e) {
    toast("cannot fetch the logs of " + name + ": " + e, true);
  }
}

function addLines(lines, skipped) {
  page.stats.lines += lines.length;
  if (skipped) {
    const gap = { service: "", seq: 0, at_ms: Date.now(), source: "lks", text: "", skipped };
    page.all.push(gap);
    if (!page.logOf) page.view = page.all;
  }
  for (const l of lines) page.all.push(l);
  if (page.all.length > ALL_LINES) page.all.splice(0, page.all.length - ALL_LINES);
  if (page.logOf) {
    for (const l of lines) if (l.service === page.logOf) page.view.push(l);
    if (page.view.length > 2000) page.view.splice(0, page.view.length - 2000);
  } else {
    page.view = page.all;
  }
  pendingLines.push(...(page.logOf ? lines.filter((l) => l.service === page.logOf) : lines));
  if (!framePending) {
    framePending = true;
    requestAnimationFrame(() => timed("lines", flushLines));
  }
}

let pendingLines = [];
let framePending = false;
let matching = 0;

/// Lines in the log view now.
let shown = 0;

/// New lines, appended as one chunk: the browser lays out and paints only
/// the chunks in view (content-visibility), and old lines go a chunk at a
/// time.
function flushLines() {
  framePending = false;
  const lines = pendingLines;
  pendingLines = [];
  const { pass, search } = filters();
  const log = $("log");
  const chunk = el("div", "chunk");
  for (const l of lines) {
    if (!pass(l)) continue;
    matching++;
    chunk.append(lineNode(l, search));
  }
  if (chunk.childElementCount) {
    shown += chunk.childElementCount;
    log.append(chunk);
    trimLog(log);
  }
  showMatches(search);
  follow();
}

function trimLog(log) {
  while (shown > SHOWN_LINES && log.childElementCount > 1) {
    shown -= log.firstElementChild.childElementCount;
    log.firstElementChild.remove();
  }
}

function renderLog() {
  pendingLines = [];
  const { pass, search } = filters();
  const chosen = page.view.filter((l) => l.skipped ? !search : pass(l));
  matching = chosen.length;
  const frag = document.createDocumentFragment();
  let chunk = null;
  const last = chosen.slice(-SHOWN_LINES);
  last.forEach((l, i) => {
    if (i % 200 === 0) frag.append((chunk = el("div", "chunk")));
    chunk.append(lineNode(l, search));
  });
  shown = last.length;
  $("log").replaceChildren(frag);
  showMatches(search);
  follow();
}

function showMatches(search) {
  const text = search ? matching + " matching line" + (matching === 1 ? "" : "s") : "";
  if ($("matches").textContent !== text) $("matches").textContent = text;
}

function follow() {
  if ($("follow").checked) {
    const log = $("log");
    log.scrollTop = log.scrollHeight;
  }
}

function pad(n, w) {
  return String(n).padStart(w || 2, "0");
}

function lineNode(l, search) {
  const div = el("span", "l src-" + l.source);
  if (l.skipped) {
    div.className = "l skip";
    div.textContent = "… " + l.skipped + " lines came too fast to show (lks logs has them)";
    return div;
  }
  const lvl = level(l);
  if (lvl !== "info") div.classList.add("lvl-" + lvl);
  const d = new Date(l.at_ms);
  const t = el("span", "t");
  t.textContent = pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) + "." + pad(d.getMilliseconds(), 3) + " ";
  div.append(t);
  if (!page.logOf) {
    const s = el("span", "s");
    s.textContent = l.service + " ";
    div.append(s);
  }
  if (!search) {
    div.append(l.text);
    return div;
  }
  // The matches marked; the text is never parsed as HTML.
  let at = 0;
  search.lastIndex = 0;
  for (const m of l.text.matchAll(search)) {
    if (!m[0]) break;
    div.append(l.text.slice(at, m.index));
    const mark = el("mark");
    mark.textContent = m[0];
    div.append(mark);
    at = m.index + m[0].length;
  }
  div.append(l.text.slice(at));
  return div;
}

// ---- the keyboard and the controls --------------------------------------

function visibleNames() {
  return page.order.filter((n) => page.rows.has(n) && !page.rows.get(n).tr.hidden);
}

function move(by) {
  const names = visibleNames();
  if (!names.length) return;
  let i = names.indexOf(page.selected);
  i = i < 0 ? (by > 0 ? 0 : names.length - 1) : Math.min(names.length - 1, Math.max(0, i + by));
  select(names[i]);
  page.rows.get(names[i]).tr.scrollIntoView({ block: "nearest" });
}

document.addEventListener("keydown", (e) => {
  const typing = e.target.matches("input, select, textarea");
  if (e.key === "Escape") {
    if (typing) {
      if (e.target.id === "search" && e.target.value) {
        e.target.value = "";
        renderLog();
      }
      e.target.blur();
    }
    $("help").hidden = true;
    return;
  }
  if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
  const sel = page.selected;
  const s = sel && page.services.get(sel);
  switch (e.key) {
    case "j": case "ArrowDown": move(1); break;
    case "k": case "ArrowUp": move(-1); break;
    case "Enter": if (sel) showLogs(sel); break;
    case "a": showLogs(null); break;
    case "t": if (sel) act("trigger", sel); break;
    case "r": if (sel) act("restart", sel); break;
    case "d": if (s) act(s.runtime === "disabled" ? "enable" : "disable", sel); break;
    case "m": if (s) act(s.manual ? "auto" : "manual", sel); break;
    case "/": $("search").focus(); break;
    case "f": $("filter").focus(); break;
    case "e": $("errors").click(); break;
    case "F": $("follow").click(); break;
    case "?": $("help").hidden = !$("help").hidden; break;
    default: return;
  }
  e.preventDefault();
});

function el(tag, cls) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  return e;
}

$("filter").addEventListener("input", applyVisibility);
$("errors").addEventListener("click", () => {
  page.onlyErrors = !page.onlyErrors;
  $("errors").classList.toggle("active", page.onlyErrors);
  applyVisibility();
});
$("all-logs").addEventListener("click", () => showLogs(null));
$("help-button").addEventListener("click", () => ($("help").hidden = !$("help").hidden));
for (const c of document.querySelectorAll(".source, #level, #regex")) c.addEventListener("change", renderLog);
let searchTimer = 0;
$("search").addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(renderLog, 120);
});
$("follow").addEventListener("change", follow);
setInterval(() => timed("ages", () => {
  for (const [name, row] of page.rows) {
    const a = age(page.services.get(name)?.started_ms);
    if (row.cells.age.textContent !== a) row.cells.age.textContent = a;
  }
}), 1000);

connect();

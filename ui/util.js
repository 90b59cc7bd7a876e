// Small helpers shared by the page's modules: building DOM from untrusted data (always as text,
// never as HTML), formatting sizes and durations, and the instance vocabulary (colours, cues,
// labels, reasons) that the tabs, the panel and the header share.

/** Attributes the browser follows or loads as a URL. */
const URL_ATTRIBUTES = new Set(['href', 'src', 'xlink:href', 'action', 'formaction', 'poster']);

/**
 * Creates an element. `opts`: `class`, `text`, `dataset`, `on<event>` handlers, anything else
 * becomes an attribute. Children are nodes or strings; strings become text nodes, so nothing
 * that comes from an instance can ever be parsed as HTML. An attribute that holds a URL (`href`,
 * `src`, ...) is set only to an `http:` or `https:` URL or a relative one (see `safeUrl`).
 */
export function el(tag, opts = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(opts)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = String(value);
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (URL_ATTRIBUTES.has(key.toLowerCase()) && !safeUrl(String(value))) {
      // Refused by leaving the attribute out, not by throwing: the element stays inert (a link
      // without `href` goes nowhere) and the rest of the view still renders, so a hostile
      // value can neither run script nor blank the page. The console says what was refused.
      console.warn(`el(): refused ${tag} ${key}=${JSON.stringify(String(value))}: only http(s) or relative URLs`);
    } else node.setAttribute(key, value === true ? '' : String(value));
  }
  append(node, children);
  return node;
}

/**
 * Whether `value` may go into a URL attribute: an `http:` or `https:` URL, or a relative one
 * (no scheme: `/x`, `./x`, `x/y`, `?q`, `#f`). Decided by the browser's own URL parser, as the
 * browser will read the attribute (it drops tabs and newlines and trims spaces and control
 * characters, so `java\tscript:` is `javascript:`): resolved against an http base, a relative
 * URL comes out `http:` and any other scheme (`javascript:`, `data:`, `vbscript:`, `file:`)
 * keeps its own. A value that does not parse is refused.
 */
export function safeUrl(value) {
  try {
    return ['http:', 'https:'].includes(new URL(value, 'http://relative.invalid/').protocol);
  } catch {
    return false;
  }
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces a node's children. */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

/** Bytes as people read them: `512 KB`, `180 MB`, `1.1 GB`. */
export function bytes(n) {
  if (typeof n !== 'number' || !Number.isFinite(n) || n < 0) return '–';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  const digits = i >= 3 && n < 10 ? 1 : 0;
  return `${n.toFixed(digits)} ${units[i]}`;
}

/** A duration in seconds as `5s`, `3m`, `2h 5m`, `3d 4h`. */
export function duration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return '–';
  const s = Math.floor(seconds);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 24) return m % 60 ? `${h}h ${m % 60}m` : `${h}h`;
  const d = Math.floor(h / 24);
  return h % 24 ? `${d}d ${h % 24}h` : `${d}d`;
}

/** How long ago an epoch time (seconds) was. */
export function ago(epoch) {
  return Number.isFinite(epoch) && epoch > 0 ? duration(Date.now() / 1000 - epoch) : '–';
}

/** Local wall-clock time of an epoch (seconds). */
export function clock(epoch) {
  if (!Number.isFinite(epoch)) return '–';
  const d = new Date(epoch * 1000);
  const today = new Date();
  const time = d.toLocaleTimeString([], { hour12: false });
  return d.toDateString() === today.toDateString() ? time : `${d.toLocaleDateString()} ${time}`;
}

/** Local wall-clock time of an epoch (seconds) in hours and minutes: `14:02` (with the date when
 * it is not today). */
export function hhmm(epoch) {
  if (!Number.isFinite(epoch)) return '–';
  const d = new Date(epoch * 1000);
  const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', hour12: false });
  return d.toDateString() === new Date().toDateString() ? time : `${d.toLocaleDateString()} ${time}`;
}

/** Compact counts: `950`, `1.2k`, `3.4M`. */
export function count(n) {
  if (!Number.isFinite(n)) return '–';
  if (n < 1000) return String(n);
  if (n < 1e6) return `${(n / 1e3).toFixed(n < 1e4 ? 1 : 0)}k`;
  return `${(n / 1e6).toFixed(1)}M`;
}

export function percent(p) {
  if (!Number.isFinite(p)) return '–';
  return p < 10 ? `${p.toFixed(1)}%` : `${Math.round(p)}%`;
}

/** The tab label, exactly: `<pid> - <PROJECT>` or `<pid> - NO PROJECT`. */
export function label(inst) {
  return `${inst.pid} - ${inst.project_name ?? 'NO PROJECT'}`;
}

/** The last component of a project path, as tabs name projects: `/home/me/webapp` -> `webapp`. */
export function projectName(path) {
  return String(path ?? '').replace(/[\\/]+$/, '').split(/[\\/]/).pop() || String(path ?? '');
}

/** The colour word of a state (as the core names it; `asleep` is a session's, see asleep.js). */
export function colour(state) {
  return { starting: 'grey', asleep: 'grey', live_with_project: 'green', live_no_project: 'yellow', zombie: 'red' }[state] ?? 'grey';
}

/** A shape besides the colour, for colour-blind users. */
export function cue(state) {
  return { starting: '…', asleep: '☾', live_with_project: '●', live_no_project: '◐', zombie: '✕' }[state] ?? '?';
}

/** The state in words: `zombie (orphaned)`, `live, no project`. */
export function stateWords(inst) {
  switch (inst.state) {
    case 'starting': return 'starting';
    case 'asleep': return 'asleep';
    case 'live_with_project': return 'live';
    case 'live_no_project': return 'live, no project';
    case 'zombie': return inst.state_reason ? `zombie (${inst.state_reason})` : 'zombie';
    default: return String(inst.state);
  }
}

/** Why a red instance is red, for people. */
export function reasonText(reason) {
  switch (reason) {
    case 'orphaned':
      return 'Its MCP client is gone (the program that started it exited), yet it still runs: no client will use it again.';
    case 'unresponsive':
      return 'Its dashboard has not answered for longer than the grace period: it is probably hung.';
    case 'dead':
      return 'It is recorded in the registry, but its process is gone.';
    default:
      return 'It is a zombie.';
  }
}

/** The client that started it: `claude (1234)`. */
export function client(inst) {
  if (!inst.client_name && !inst.client_pid) return null;
  return inst.client_pid ? `${inst.client_name ?? '?'} (${inst.client_pid})` : inst.client_name;
}

/** A stable key for an instance: PID and process start time (PIDs are reused). */
export function keyOf(pid, startedAt) {
  return `${pid}@${Math.floor(startedAt ?? 0)}`;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

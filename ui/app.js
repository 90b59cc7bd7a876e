// The page's state and wiring: the instance list from the server-sent events of `/api/events`
// (a snapshot, then every change, reconnecting by itself after a daemon restart), the header's
// counts and actions, the tab strip, the open tab (named by the URL fragment, so it survives
// reloads) and the one polling loop, which only serves the open tab and pauses while the page
// is hidden.

import { api, post } from './api.js';
import { Tabs } from './tabs.js';
import { Panel } from './panel.js';
import { confirm, setupSessionDialog } from './dialogs.js';
import { setupClientsDialog } from './clients.js';
import { el, fill, label, colour, stateWords, bytes, keyOf, sleep } from './util.js';

const $ = (id) => document.getElementById(id);

/** How often the open tab is polled. */
const POLL_MS = 1000;

const state = {
  instances: new Map(),
  sessions: [],
  selected: null,
  panel: null,
  loaded: false,
};

const tabs = new Tabs($('tabs'), (key) => select(key, true));
let wake = () => {};

function ordered() {
  return [...state.instances.values()].sort((a, b) => a.first_seen - b.first_seen || a.pid - b.pid || a.started_at - b.started_at);
}

function put(inst) {
  inst.key = keyOf(inst.pid, inst.started_at);
  state.instances.set(inst.key, inst);
  return inst;
}

function render() {
  const list = ordered();
  tabs.render(list);
  renderHeader(list);
  $('first-run').hidden = !state.loaded || list.length > 0;
  if (!list.length) {
    closePanel();
    return;
  }
  if (!state.selected || !state.instances.has(state.selected)) {
    select(fromHash() ?? list[0].key, false);
  } else if (state.panel) {
    state.panel.update(state.instances.get(state.selected));
  }
}

function renderHeader(list) {
  const counts = { green: 0, yellow: 0, red: 0, grey: 0 };
  let memory = 0;
  for (const inst of list) {
    counts[colour(inst.state)] += 1;
    memory += inst.cost?.memory_bytes ?? 0;
  }
  for (const [c, n] of Object.entries(counts)) {
    document.querySelector(`[data-count="${c}"]`).textContent = String(n);
    document.querySelector(`.count[data-colour="${c}"]`).classList.toggle('zero', n === 0);
  }
  const total = $('total');
  total.textContent = `${list.length} ${list.length === 1 ? 'instance' : 'instances'}${memory ? `, ${bytes(memory)}` : ''}`;
  total.dataset.memoryBytes = String(memory);
  const kill = $('kill-zombies');
  kill.textContent = `Kill all zombies (${counts.red})`;
  kill.disabled = counts.red === 0;
}

function fromHash() {
  const pid = Number.parseInt(location.hash.slice(1), 10);
  if (!Number.isInteger(pid)) return null;
  const matches = ordered().filter((i) => i.pid === pid);
  return (matches.find((i) => i.state_reason !== 'dead') ?? matches[0])?.key ?? null;
}

function select(key, byUser) {
  const inst = state.instances.get(key);
  if (!inst) return;
  tabs.select(key);
  if (state.selected !== key || !state.panel) {
    state.selected = key;
    state.panel?.destroy();
    const root = $('panel');
    root.hidden = false;
    root.setAttribute('aria-labelledby', $('tabs').querySelector(`[data-key="${key}"]`)?.id ?? '');
    state.panel = new Panel(root, inst, { session: sessionFor, confirm, notify });
    wake();
  }
  const hash = `#${inst.pid}`;
  if (location.hash !== hash && (byUser || location.hash)) history.replaceState(null, '', hash);
}

function closePanel() {
  state.panel?.destroy();
  state.panel = null;
  state.selected = null;
  $('panel').hidden = true;
  fill($('panel'));
}

function sessionFor(pid) {
  return state.sessions.find((s) => s.pid === pid && !s.ended_at) ?? null;
}

async function loadSessions() {
  try {
    const list = await api('/api/sessions');
    state.sessions = Array.isArray(list) ? list : [];
    if (state.panel) state.panel.update(state.panel.inst);
  } catch (e) {
    if (e.status === 401 || e.status === 403) signedOut();
  }
}

async function reloadInstances() {
  try {
    const list = await api('/api/instances');
    state.instances.clear();
    (Array.isArray(list) ? list : []).forEach(put);
    render();
  } catch (e) {
    if (e.status === 401 || e.status === 403) signedOut();
  }
}

function signedOut() {
  $('signed-out').hidden = false;
  setConn('signed-out', 'not signed in');
}

function setConn(s, text) {
  const conn = $('conn');
  conn.dataset.state = s;
  conn.textContent = text;
}

// ---- notices ----------------------------------------------------------------------------------

let noticeTimer = null;

function notify(text, kind = 'ok') {
  const box = $('notice');
  box.dataset.kind = kind;
  fill($('notice-text'), text);
  box.hidden = false;
  clearTimeout(noticeTimer);
  if (kind === 'ok') noticeTimer = setTimeout(() => { box.hidden = true; }, 15000);
}

$('notice-close').addEventListener('click', () => { $('notice').hidden = true; });

// ---- the event stream ---------------------------------------------------------------------------

let retry = 1000;

function connect() {
  const source = new EventSource('/api/events');
  const on = (type, f) => source.addEventListener(type, (e) => {
    let d;
    try {
      d = JSON.parse(e.data);
    } catch {
      return;
    }
    f(d);
    if (type === 'cost_changed') return; // not news for the timeline
    if (d && state.panel && d.pid === state.panel.pid) state.panel.touched();
    else if (d?.instance && state.panel && d.instance.pid === state.panel.pid) state.panel.touched();
  });
  on('snapshot', (d) => {
    retry = 1000;
    state.instances.clear();
    (d.instances ?? []).forEach(put);
    state.loaded = true;
    $('signed-out').hidden = true;
    setConn('open', 'live');
    render();
    if (document.documentElement.dataset.ready !== '1') {
      performance.mark('serena-tray-ready');
      document.documentElement.dataset.ready = '1';
    }
  });
  for (const type of ['instance_added', 'state_changed', 'instance_updated', 'idle_warning', 'idle_shutdown']) {
    on(type, (d) => {
      if (!d.instance) return;
      put(d.instance);
      render();
    });
  }
  on('cost_changed', (d) => {
    const inst = state.instances.get(keyOf(d.pid, d.started_at));
    if (!inst) return;
    inst.cost = d.cost;
    render();
  });
  on('instance_removed', (d) => {
    state.instances.delete(keyOf(d.pid, d.started_at));
    render();
  });
  for (const type of ['session_launching', 'session_ready', 'session_failed', 'session_released', 'session_exited', 'session_renewed', 'session_expired', 'session_attached', 'session_detached']) {
    on(type, () => loadSessions());
  }
  on('lagged', () => reloadInstances());
  source.addEventListener('open', () => setConn('open', 'live'));
  source.addEventListener('error', async () => {
    setConn('closed', 'reconnecting…');
    if (source.readyState !== EventSource.CLOSED) return; // the browser retries by itself
    source.close();
    try {
      await api('/api/health');
      await api('/api/sessions');
    } catch (e) {
      if (e.status === 401 || e.status === 403) {
        signedOut();
        return;
      }
    }
    await sleep(retry);
    retry = Math.min(retry * 2, 10000);
    connect();
  });
}

// ---- the header's actions -----------------------------------------------------------------------

async function killZombies() {
  const zombies = ordered().filter((i) => i.state === 'zombie');
  if (!zombies.length) return;
  const freed = zombies.reduce((sum, z) => sum + (z.cost?.memory_bytes ?? 0), 0);
  const lines = [
    el('ul', { class: 'plain' }, zombies.map((z) => el('li', { text: `${label(z)}: ${stateWords(z)}${z.cost ? `, ${bytes(z.cost.memory_bytes)}` : ''}` }))),
    `Each is asked to shut down, then its whole process tree is terminated${freed ? `, freeing about ${bytes(freed)}` : ''}. Dead records are removed.`,
  ];
  if (!(await confirm(`Kill ${zombies.length} ${zombies.length === 1 ? 'zombie' : 'zombies'}?`, lines, 'Kill them'))) return;
  const button = $('kill-zombies');
  button.disabled = true;
  try {
    const r = await post('/api/zombies/kill');
    const parts = [];
    const name = (pid) => {
      const z = zombies.find((i) => i.pid === pid);
      return z ? label(z) : String(pid);
    };
    if (r.killed?.length) parts.push(`Killed ${r.killed.map((k) => `${name(k.pid)} (${k.tree?.length ?? 1} processes)`).join(', ')}.`);
    if (r.pruned?.length) parts.push(`Removed ${r.pruned.length} dead ${r.pruned.length === 1 ? 'record' : 'records'}.`);
    if (r.failed?.length) parts.push(`Failed: ${r.failed.map((f) => `${name(f.pid)}: ${f.error}`).join('; ')}.`);
    if (!parts.length) parts.push('There was nothing left to kill.');
    notify(parts.join(' '), r.failed?.length ? 'error' : 'ok');
  } catch (e) {
    notify(`Kill all zombies failed: ${e.message}`, 'error');
  } finally {
    render();
  }
}

$('kill-zombies').addEventListener('click', killZombies);
const openSession = setupSessionDialog(() => loadSessions());
$('new-session').addEventListener('click', openSession);
$('first-run-session').addEventListener('click', openSession);
const openClients = setupClientsDialog({ confirm, notify });
$('clients').addEventListener('click', openClients);
$('first-run-clients').addEventListener('click', openClients);

// `#new-session` (the tray's "New session...") opens the form, then gives the fragment back to
// the open tab, so that asking again opens it again.
function followHash() {
  if (location.hash === '#new-session') {
    const inst = state.instances.get(state.selected);
    history.replaceState(null, '', inst ? `#${inst.pid}` : location.pathname);
    openSession();
    return;
  }
  const key = fromHash();
  if (key) select(key, false);
}
window.addEventListener('hashchange', followHash);
followHash();

// ---- the poll loop (the open tab only) ---------------------------------------------------------

function tick(ms) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    wake = () => {
      clearTimeout(timer);
      resolve();
    };
  });
}

function visible() {
  if (!document.hidden) return Promise.resolve();
  return new Promise((resolve) => document.addEventListener('visibilitychange', function seen() {
    if (document.hidden) return;
    document.removeEventListener('visibilitychange', seen);
    resolve();
  }));
}

async function pollLoop() {
  for (;;) {
    await visible();
    const panel = state.panel;
    if (panel) {
      try {
        await panel.poll();
      } catch {
        // A failed round shows its errors in place; the next one tries again.
      }
    }
    await tick(POLL_MS);
  }
}

// Ages in tooltips and the header stay current.
setInterval(() => {
  if (!document.hidden && state.loaded) render();
}, 15000);

connect();
loadSessions();
pollLoop();

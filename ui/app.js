// The page's state and wiring: the instance list from the server-sent events of `/api/events`
// (a snapshot, then every change, each through one table of handlers; reconnecting by itself
// after a daemon restart), notices (a kill made elsewhere, a recovered registry), the header's
// counts, what sharing and sleep save, and its actions, the tab strip (instances, then asleep
// sessions), the open tab (named by the URL fragment, so it survives
// reloads) and the one polling loop, which only serves the open tab and pauses while the page
// is hidden.

import { api, post } from './api.js';
import { Tabs } from './tabs.js';
import { Panel } from './panel.js';
import { AsleepPanel } from './asleep.js';
import { asleepEntries, asleepKey, duplicates, savedBytes, clientsBehind } from './sharing.js';
import { confirm, setupSessionDialog } from './dialogs.js';
import { setupClientsDialog } from './clients.js';
import { readEvents } from './events.js';
import { el, fill, label, colour, stateWords, bytes, keyOf, sleep } from './util.js';

const $ = (id) => document.getElementById(id);

/** How often the open tab is polled. */
const POLL_MS = 1000;

const state = {
  instances: new Map(),
  sessions: [],
  /** The asleep sessions as tab entries (sharing.js `asleepEntries`), by key. */
  asleep: new Map(),
  /** The same-project groups by instance key (sharing.js `duplicates`). */
  same: new Map(),
  /**
   * The open tab's session changed form: `{pid}` (woke: its new Serena's tab opens once shown)
   * or `{key}` (fell asleep: its asleep tab opens once shown).
   */
  follow: null,
  /** The PID of the last open instance tab that vanished (its Serena may have gone to sleep). */
  vanished: null,
  selected: null,
  panel: null,
  loaded: false,
};

const tabs = new Tabs($('tabs'), (key) => select(key, true));
let wake = () => {};

function ordered() {
  return [...state.instances.values()].sort((a, b) => a.first_seen - b.first_seen || a.pid - b.pid || a.started_at - b.started_at);
}

/** Everything with a tab, in tab order: the instances, then the asleep sessions. */
function entries() {
  return [...ordered(), ...state.asleep.values()];
}

function entryOf(key) {
  return state.instances.get(key) ?? state.asleep.get(key);
}

function put(inst) {
  inst.key = keyOf(inst.pid, inst.started_at);
  state.instances.set(inst.key, inst);
  return inst;
}

function render() {
  const instances = ordered();
  const list = entries();
  state.same = duplicates(instances, state.sessions);
  tabs.render(list, state.same);
  renderHeader(instances);
  $('first-run').hidden = !state.loaded || list.length > 0;
  if (!list.length) {
    closePanel();
    return;
  }
  const follow = followed(instances);
  if (follow) {
    state.follow = null;
    select(follow.key, true);
  } else if (!state.selected || !entryOf(state.selected)) {
    if (state.panel?.pid) state.vanished = state.panel.pid;
    select(fromHash() ?? list[0].key, false);
  } else if (state.panel) {
    state.panel.update(entryOf(state.selected));
  }
}

/** The entry that `state.follow` names, once it shows. */
function followed(instances) {
  const f = state.follow;
  if (!f) return null;
  if (f.key) return state.asleep.get(f.key) ?? null;
  return instances.find((i) => i.pid === f.pid && i.state_reason !== 'dead') ?? null;
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
  const asleep = state.asleep.size;
  document.querySelector('[data-count="asleep"]').textContent = String(asleep);
  document.querySelector('.count[data-colour="asleep"]').hidden = asleep === 0;
  const saved = savedBytes(list, state.sessions);
  const save = $('saved');
  save.hidden = saved <= 0;
  save.textContent = saved > 0 ? `sharing and sleep save ${bytes(saved)}` : '';
  save.dataset.savedBytes = String(saved);
  const total = $('total');
  total.textContent = `${list.length} ${list.length === 1 ? 'instance' : 'instances'}${memory ? `, ${bytes(memory)}` : ''}`;
  total.dataset.memoryBytes = String(memory);
  const kill = $('kill-zombies');
  kill.textContent = `Kill all zombies (${counts.red})`;
  kill.disabled = counts.red === 0;
}

function fromHash() {
  if (location.hash.startsWith('#asleep-')) {
    const key = asleepKey(decodeURIComponent(location.hash.slice('#asleep-'.length)));
    return state.asleep.has(key) ? key : null;
  }
  const pid = Number.parseInt(location.hash.slice(1), 10);
  if (!Number.isInteger(pid)) return null;
  const matches = ordered().filter((i) => i.pid === pid);
  return (matches.find((i) => i.state_reason !== 'dead') ?? matches[0])?.key ?? null;
}

function select(key, byUser) {
  const inst = entryOf(key);
  if (!inst) return;
  tabs.select(key);
  if (state.selected !== key || !state.panel) {
    state.selected = key;
    state.panel?.destroy();
    const root = $('panel');
    root.hidden = false;
    root.setAttribute('aria-labelledby', $('tabs').querySelector(`[data-key="${key}"]`)?.id ?? '');
    state.panel = inst.state === 'asleep'
      ? new AsleepPanel(root, inst, { confirm, notify, woken })
      : new Panel(root, inst, { session: sessionFor, confirm, notify, killing, same: (k) => state.same.get(k) ?? null, share: shareFromNowOn });
    wake();
  }
  const hash = inst.state === 'asleep' ? `#asleep-${encodeURIComponent(inst.session.session_id)}` : `#${inst.pid}`;
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

/** The Serena of the open asleep tab's session woke as `pid`: its tab opens when it shows. */
function woken(pid) {
  state.follow = { pid };
  render();
}

async function loadSessions() {
  try {
    const list = await api('/api/sessions');
    state.sessions = Array.isArray(list) ? list : [];
    state.asleep = new Map(asleepEntries(state.sessions).map((e) => [e.key, e]));
    if (state.loaded) render();
    else if (state.panel) state.panel.update(state.panel.inst);
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

/** Shows `text` above the tabs; `kind` `ok` goes after 15 s, `warning` and `error` stay. */
function notify(text, kind = 'ok') {
  const box = $('notice');
  box.dataset.kind = kind;
  fill($('notice-text'), text);
  box.hidden = false;
  clearTimeout(noticeTimer);
  if (kind === 'ok') noticeTimer = setTimeout(() => { box.hidden = true; }, 15000);
}

$('notice-close').addEventListener('click', () => { $('notice').hidden = true; });

/** The files of Serena Tray that cannot be written now (a full disk), file -> failure. */
const failingWrites = new Map();

/** Says which files cannot be written, or, with none left, `recovered` (what is written again). */
function showWrites(recovered) {
  if (failingWrites.size) {
    const each = [...failingWrites.values()].map((f) => `Cannot write ${f.path}: ${f.error}.`);
    notify(`${each.join(' ')} The old ${failingWrites.size > 1 ? 'files are' : 'file is'} kept and nothing else stops; every change is written as soon as a write succeeds (free some space, or make the folder writable).`, 'error');
  } else if (recovered) {
    notify(recovered);
  }
}

// ---- the event stream ---------------------------------------------------------------------------

/** Kills this page asked for, PID -> until when (ms): their `instance_killed` is no news. */
const ownKills = new Map();

/** Marks `pids` as killed from this page: the action reports the result itself. */
function killing(pids) {
  const until = Date.now() + 60000;
  for (const pid of pids) ownKills.set(pid, until);
}

/** The labels of the instances removed lately, by PID: an `instance_killed` follows the removal. */
const gone = new Map();

function putInstance(d) {
  if (!d.instance) return;
  put(d.instance);
  render();
}

function sessionsChanged() {
  loadSessions();
}

/**
 * What each event of `/api/events` does to the page (the types of `src-tauri/core/events.rs`,
 * plus the stream's own `snapshot` and `lagged`). An event not named here is logged and ignored.
 */
const ON_EVENT = {
  snapshot(d) {
    retry = 1000;
    state.instances.clear();
    (d.instances ?? []).forEach(put);
    state.loaded = true;
    $('signed-out').hidden = true;
    setConn('open', 'live');
    render();
    const had = failingWrites.size;
    failingWrites.clear();
    for (const f of d.write_failures ?? []) failingWrites.set(f.file, f);
    if (had || failingWrites.size) showWrites("Serena Tray's files are written again.");
    if (document.documentElement.dataset.ready !== '1') {
      performance.mark('serena-tray-ready');
      document.documentElement.dataset.ready = '1';
    }
  },
  // The page read too slowly and missed events: the list is read again.
  lagged: () => reloadInstances(),
  instance_added: putInstance,
  state_changed: putInstance,
  instance_updated: putInstance,
  idle_warning: putInstance,
  idle_shutdown: putInstance,
  cost_changed(d) {
    const inst = state.instances.get(keyOf(d.pid, d.started_at));
    if (!inst) return;
    inst.cost = d.cost;
    render();
  },
  instance_removed(d) {
    const key = keyOf(d.pid, d.started_at);
    const inst = state.instances.get(key);
    if (inst) {
      gone.set(d.pid, label(inst));
      if (gone.size > 100) gone.delete(gone.keys().next().value);
    }
    state.instances.delete(key);
    render();
  },
  instance_killed(d) {
    // Its `instance_removed` came first and took the tab away; a tab that still shows the PID
    // means that one was missed, and the list is read again.
    const shown = ordered().find((i) => i.pid === d.pid);
    if (shown) reloadInstances();
    const name = gone.get(d.pid) ?? (shown ? label(shown) : `PID ${d.pid}`);
    gone.delete(d.pid);
    const own = (ownKills.get(d.pid) ?? 0) > Date.now();
    ownKills.delete(d.pid);
    // Killed elsewhere (the tray, the CLI, auto-kill, idle shutdown): say so.
    if (!own) notify(`Serena Tray killed ${name} (${String(d.outcome ?? 'done').replaceAll('_', ' ')}).`);
  },
  write_failed(d) {
    failingWrites.set(d.file, d);
    showWrites();
  },
  write_recovered(d) {
    failingWrites.delete(d.file);
    showWrites(`${d.path ?? d.file} is written again.`);
  },
  registry_recovered(d) {
    notify(`The registry file did not parse: it was moved aside to ${d.moved_to ?? '?'} (kept, not deleted) and a fresh one was started.`, 'warning');
  },
  session_launching: sessionsChanged,
  session_ready: sessionsChanged,
  session_failed: sessionsChanged,
  session_released: sessionsChanged,
  session_exited: sessionsChanged,
  session_renewed: sessionsChanged,
  session_expired: sessionsChanged,
  session_attached: sessionsChanged,
  session_detached: sessionsChanged,
  session_asleep(d) {
    // The open tab's Serena was put to sleep (its tab may have gone already): the page follows
    // the session to its asleep tab.
    if (d.pid && (state.panel?.pid === d.pid || state.vanished === d.pid)) state.follow = { key: asleepKey(d.session_id) };
    sessionsChanged();
  },
  session_woke(d) {
    // Woken from its open tab elsewhere (a client's call, the CLI): the page follows it.
    if (state.selected === asleepKey(d.session_id) && d.pid) state.follow = { pid: d.pid };
    sessionsChanged();
  },
  // The bridge's cached handshake differed from a started Serena's: the timeline's news only.
  handshake_replaced: () => {},
};

/** Hands one event (`name`, its data as text) to its handler; tells the open tab's timeline. */
function dispatch(name, text) {
  const handle = Object.hasOwn(ON_EVENT, name) ? ON_EVENT[name] : null;
  if (!handle) {
    console.warn(`Serena Tray: ignored an event this page does not know: ${name}`);
    return;
  }
  let d;
  try {
    d = JSON.parse(text);
  } catch {
    d = null;
  }
  if (typeof d !== 'object' || d === null) {
    console.warn(`Serena Tray: ignored a ${name} event whose data is not a JSON object`);
    return;
  }
  try {
    handle(d);
  } catch (e) {
    console.error(`Serena Tray: a ${name} event could not be shown:`, e);
    return;
  }
  if (name === 'cost_changed') return; // not news for the timeline
  const pid = d.pid ?? d.instance?.pid ?? d.session?.pid;
  if (state.panel && pid === state.panel.pid) state.panel.touched();
}

let retry = 1000;

/** Follows `/api/events` for as long as the page is open, reconnecting after a restart. */
async function follow() {
  for (;;) {
    let response = null;
    try {
      response = await fetch('/api/events', { headers: { Accept: 'text/event-stream' }, cache: 'no-store' });
    } catch {
      // Not answering (stopped, restarting): tried again below.
    }
    if (response?.status === 401 || response?.status === 403) {
      signedOut();
      return;
    }
    if (response?.ok && response.body) {
      setConn('open', 'live');
      try {
        await readEvents(response.body, dispatch);
      } catch {
        // The stream broke: tried again below.
      }
    } else {
      response?.body?.cancel();
    }
    setConn('closed', 'reconnecting…');
    await sleep(retry);
    retry = Math.min(retry * 2, 10000);
  }
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
  killing(zombies.map((z) => z.pid));
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
$('clients').addEventListener('click', () => openClients());
$('first-run-clients').addEventListener('click', () => openClients());

/** "Share from now on" on a same-project badge: the Clients view on the clients behind it. */
function shareFromNowOn(group) {
  const { kinds, names } = clientsBehind(group);
  openClients({ clients: kinds, names, why: `the ${group.unshared.length} Serenas on ${group.project}`, share: true });
}

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

follow();
loadSessions();
pollLoop();

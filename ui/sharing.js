// What sharing and sleeping save, and where they are missing: the sessions that sleep (a shared
// session with clients and no Serena, see the data contract of `GET /api/sessions`), what the
// shared and sleeping sessions save against one Serena per client, and the Serenas that run
// side by side on one project directory without sharing (each client's own), with the client
// configs that could share from now on. Pure functions over the page's state: app.js, tabs.js
// and panel.js show what they say.

import { projectName } from './util.js';

/** Whether a session (as `/api/sessions` answers it) is asleep: no Serena, not ended. */
export function isAsleep(session) {
  return session.asleep_since != null && !session.ended_at;
}

/** The tab key of an asleep session (instances' keys are `<pid>@<start>`: no clash). */
export function asleepKey(sessionId) {
  return `asleep:${sessionId}`;
}

/**
 * The asleep sessions of `sessions` as tab entries: `{key, state: 'asleep', session}`, the
 * longest asleep first.
 */
export function asleepEntries(sessions) {
  return sessions
    .filter(isAsleep)
    .sort((a, b) => a.asleep_since - b.asleep_since || a.session_id.localeCompare(b.session_id))
    .map((session) => ({ key: asleepKey(session.session_id), state: 'asleep', session }));
}

/** The tab label of an asleep session: `asleep - <PROJECT>`. */
export function asleepLabel(session) {
  return `asleep - ${projectName(session.project_path)}`;
}

/** The live shared session whose Serena is `inst`, if any. */
function sharedSessionOf(inst, sessions) {
  return sessions.find((s) => s.shared && !s.ended_at && !isAsleep(s) && s.pid === inst.pid) ?? null;
}

/**
 * What sharing and sleeping save now against one Serena per client, in bytes: for each live
 * shared session, (clients - 1) times its Serena's measured memory; for each asleep one, clients
 * times the memory it gave back (nothing when unknown).
 */
export function savedBytes(instances, sessions) {
  let saved = 0;
  for (const s of sessions) {
    if (!s.shared || s.ended_at) continue;
    const clients = Array.isArray(s.attached) ? s.attached.length : 0;
    if (isAsleep(s)) {
      saved += clients * (s.given_back_bytes ?? 0);
      continue;
    }
    const inst = instances.find((i) => i.pid === s.pid && i.state_reason !== 'dead');
    saved += Math.max(0, clients - 1) * (inst?.cost?.memory_bytes ?? 0);
  }
  return saved;
}

const LIVE = new Set(['live_with_project', 'live_no_project']);

/** A project directory as a grouping key: trailing separators do not make another project. */
function projectKey(path) {
  return typeof path === 'string' && path ? path.replace(/(.)[\\/]+$/, '$1') : null;
}

/**
 * The live Serenas that share a project directory with another one, by instance key: `{project,
 * members, memory}` (the same object for each member; `members` in the order given, `memory` the
 * sum of their measured memory). Only the members that do not share are listed by key: a shared
 * session's Serena is already what the others should use, so it is counted, never badged.
 */
export function duplicates(instances, sessions) {
  const groups = new Map();
  for (const inst of instances) {
    const key = LIVE.has(inst.state) ? projectKey(inst.project_path) : null;
    if (!key) continue;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(inst);
  }
  const byInstance = new Map();
  for (const [project, members] of groups) {
    if (members.length < 2) continue;
    const group = {
      project,
      members,
      memory: members.reduce((sum, i) => sum + (i.cost?.memory_bytes ?? 0), 0),
      unshared: members.filter((i) => !sharedSessionOf(i, sessions)),
    };
    for (const inst of group.unshared) byInstance.set(inst.key, group);
  }
  return byInstance;
}

/**
 * The client configs (`/api/clients`' `client` names) that a client process of this name reads,
 * as far as a process name tells: Claude Code's CLI runs as `claude` (as Claude Desktop may on
 * Linux), VS Code as `code`. A name not listed (`node`, a shell) tells nothing.
 */
const CONFIGS_OF_PROCESS = {
  claude: ['claude-code', 'claude-desktop'],
  'claude-desktop': ['claude-desktop'],
  cursor: ['cursor'],
  code: ['vscode'],
  'code-insiders': ['vscode'],
  codium: ['vscode'],
  vscodium: ['vscode'],
  codex: ['codex'],
  windsurf: ['windsurf'],
};

/** The config clients behind the unshared Serenas of `group`: `{kinds, names}`. */
export function clientsBehind(group) {
  const names = [...new Set(group.unshared.map((i) => i.client_name).filter(Boolean))];
  const kinds = new Set();
  for (const name of names) {
    const plain = name.toLowerCase().replace(/\.exe$/, '');
    for (const kind of CONFIGS_OF_PROCESS[plain] ?? []) kinds.add(kind);
  }
  return { kinds: [...kinds], names };
}

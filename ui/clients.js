// The Clients view: the MCP client configs of this user, each Serena entry and whether it goes
// through `serena-tray launch`, the diff that routing them through Serena Tray would make
// (shown before anything is written), and Route / Undo, with or without `--share` (one Serena
// per project for all its clients). It can open on some clients only (the "same project" badge
// opens it on the clients behind its Serenas, `--share` ticked). The work is the server's
// (`/api/clients`, as `serena-tray configure`).

import { api, post } from './api.js';
import { fill, el } from './util.js';

const $ = (id) => document.getElementById(id);

const STATUS = {
  direct: 'runs Serena directly',
  launched: 'goes through Serena Tray',
};

function fileView(f) {
  const entries = f.error
    ? [el('p', { class: 'error', text: `Left alone: ${f.error}` })]
    : f.entries.length
      ? [el('ul', { class: 'client-entries' }, f.entries.map((e) => el('li', { dataset: { status: e.status } },
        el('strong', { text: e.name }), ` (${e.location}): `, el('span', { class: 'client-status', text: STATUS[e.status] ?? e.status }),
        el('div', { class: 'client-command' }, el('code', { text: e.command.join(' ') })))))]
      : [el('p', { class: 'hint', text: 'No Serena entry.' })];
  const diff = f.diff
    ? el('details', { class: 'client-diff', open: true }, el('summary', { text: 'What routing it changes' }),
      el('pre', { class: 'diff' }, f.diff.replace(/\n$/, '').split('\n').map((line) => el('span', {
        class: line.startsWith('+') && !line.startsWith('+++') ? 'add' : line.startsWith('-') && !line.startsWith('---') ? 'del' : '',
        text: `${line}\n`,
      }))))
    : null;
  return el('section', { class: 'client-file', dataset: { client: f.client, scope: f.scope } },
    el('h3', {}, el('span', { text: `${f.client} (${f.scope})` }), ' ', el('code', { text: f.path })),
    entries, diff);
}

/** Whether the added lines of a diff put `--share` in. */
function addsShare(diff) {
  return diff.split('\n').some((line) => line.startsWith('+') && !line.startsWith('+++') && line.includes('--share'));
}

/**
 * Wires the Clients dialog; returns the function that opens it: `open()` on every config, or
 * `open({clients, names, why, share})`: on the configs of `clients` (`/api/clients` names) only,
 * `names` the client processes they were found from and `why` what they are behind (said in the
 * view), `share` ticked or not. With no config of those clients found, every config is shown
 * and the view says so.
 */
export function setupClientsDialog({ confirm, notify }) {
  const dialog = $('clients-dialog');
  const body = $('clients-body');
  const route = $('clients-route');
  const undo = $('clients-undo');
  const share = $('clients-share');
  const scope = $('clients-scope');
  let files = [];
  // The clients the view is narrowed to (null: all), and what it was opened for.
  let only = null;
  let opened = null;

  const narrowed = (all) => {
    if (!opened) return all;
    const named = opened.names.length ? ` (${opened.names.join(', ')})` : '';
    const mine = all.filter((f) => opened.clients.includes(f.client));
    if (!mine.length) {
      only = null;
      fill(scope, `No config found here belongs to the clients behind ${opened.why}${named}: every config is shown.`);
      return all;
    }
    only = [...new Set(mine.map((f) => f.client))];
    fill(scope, `The configs of ${only.join(', ')}: the clients behind ${opened.why}${named}. `,
      el('button', { type: 'button', class: 'link', dataset: { action: 'show-all' }, onclick: showAll, text: 'Show every client' }));
    return mine;
  };

  const load = async () => {
    fill(body, el('p', { class: 'busy', text: 'Looking for MCP client configs…' }));
    route.disabled = true;
    undo.disabled = true;
    scope.hidden = !opened;
    try {
      const r = await api(share.checked ? '/api/clients?share=true' : '/api/clients');
      files = narrowed(r.files ?? []);
      const views = files.map(fileView);
      if (!views.length) views.push(el('p', { text: 'No MCP client config was found for this user.' }));
      if (r.warning) views.unshift(el('p', { class: 'error', text: r.warning }));
      // What Route writes is what the diff shows, or Route is not offered.
      const unshown = share.checked && files.some((f) => f.diff && !addsShare(f.diff));
      if (unshown) {
        views.unshift(el('p', { class: 'error', dataset: { problem: 'no-share-preview' }, text: 'This Serena Tray does not show --share in its preview, so routing with it is not offered here: run serena-tray configure --share.' }));
      }
      fill(body, views);
      route.disabled = unshown || !files.some((f) => f.diff);
      undo.disabled = !files.some((f) => f.entries.some((e) => e.status === 'launched'));
    } catch (e) {
      fill(body, el('p', { class: 'error', text: `Cannot read the client configs: ${e.message}` }));
    }
  };

  function showAll() {
    opened = null;
    only = null;
    load();
  }

  share.addEventListener('change', load);
  /** The body of apply and undo: the clients shown, and (apply) `--share` if ticked. */
  const request = (withShare) => {
    const r = {};
    if (only) r.clients = only;
    if (withShare && share.checked) r.share = true;
    return r;
  };

  const change = async (path, title, ok, lines, sent) => {
    if (!(await confirm(title, lines, ok))) return;
    try {
      const r = await post(path, sent);
      const done = r.files.filter((f) => f.changed).length;
      const failed = r.files.filter((f) => f.error);
      const parts = [`${done} ${done === 1 ? 'file' : 'files'} changed (a backup of each is beside it).`];
      if (failed.length) parts.push(`Left alone: ${failed.map((f) => `${f.path}: ${f.error}`).join('; ')}.`);
      notify(parts.join(' '), failed.length ? 'error' : 'ok');
    } catch (e) {
      notify(`${title} failed: ${e.message}`, 'error');
    }
    await load();
  };

  route.addEventListener('click', () => {
    const changing = files.filter((f) => f.diff);
    const how = share.checked
      ? 'serena-tray launch --share, which gives all the clients of one project one Serena and ends it after the last'
      : 'serena-tray launch, which ends Serena with its client';
    change('/api/clients/apply', 'Route through Serena Tray', 'Route', [
      `Rewrites ${changing.length} ${changing.length === 1 ? 'file' : 'files'} as the diff shows: each Serena entry then runs through ${how}.`,
      ...changing.map((f) => el('p', {}, el('code', { text: f.path }))),
      'A backup of each file is kept beside it; Undo reverses the change.',
    ], request(true));
  });
  undo.addEventListener('click', () => change('/api/clients/undo', 'Undo the routing', 'Undo', [
    'Puts the Serena entries back as they were (the backup when nothing else in the file changed).',
  ], request(false)));
  $('clients-close').addEventListener('click', () => dialog.close());

  return (options = null) => {
    opened = options && Array.isArray(options.clients)
      ? { clients: options.clients, names: options.names ?? [], why: options.why ?? 'them' }
      : null;
    only = null;
    share.checked = !!options?.share;
    if (!dialog.open) dialog.showModal();
    load();
  };
}

// The Clients view: the MCP client configs of this user, each Serena entry and whether it goes
// through `serena-tray launch`, the diff that routing them through Serena Tray would make
// (shown before anything is written), and Route / Undo. The work is the server's
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

/** Wires the Clients dialog; returns the function that opens it. */
export function setupClientsDialog({ confirm, notify }) {
  const dialog = $('clients-dialog');
  const body = $('clients-body');
  const route = $('clients-route');
  const undo = $('clients-undo');
  let files = [];

  const load = async () => {
    fill(body, el('p', { class: 'busy', text: 'Looking for MCP client configs…' }));
    route.disabled = true;
    undo.disabled = true;
    try {
      const r = await api('/api/clients');
      files = r.files ?? [];
      const views = files.map(fileView);
      if (!views.length) views.push(el('p', { text: 'No MCP client config was found for this user.' }));
      if (r.warning) views.unshift(el('p', { class: 'error', text: r.warning }));
      fill(body, views);
      route.disabled = !files.some((f) => f.diff);
      undo.disabled = !files.some((f) => f.entries.some((e) => e.status === 'launched'));
    } catch (e) {
      fill(body, el('p', { class: 'error', text: `Cannot read the client configs: ${e.message}` }));
    }
  };

  const change = async (path, title, ok, lines) => {
    if (!(await confirm(title, lines, ok))) return;
    try {
      const r = await post(path);
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
    change('/api/clients/apply', 'Route through Serena Tray', 'Route', [
      `Rewrites ${changing.length} ${changing.length === 1 ? 'file' : 'files'} as the diff shows: each Serena entry then runs through serena-tray launch, which ends Serena with its client.`,
      ...changing.map((f) => el('p', {}, el('code', { text: f.path }))),
      'A backup of each file is kept beside it; Undo reverses the change.',
    ]);
  });
  undo.addEventListener('click', () => change('/api/clients/undo', 'Undo the routing', 'Undo', [
    'Puts the Serena entries back as they were (the backup when nothing else in the file changed).',
  ]));
  $('clients-close').addEventListener('click', () => dialog.close());

  return () => {
    if (!dialog.open) dialog.showModal();
    load();
  };
}

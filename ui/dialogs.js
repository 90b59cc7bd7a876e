// The page's dialogs: a confirmation (Kill, Kill all zombies, Shut down, Release) and the New
// session form, which calls `/request-session` and shows the MCP URL ready to copy, or the
// server's message in place.

import { post } from './api.js';
import { fill, el } from './util.js';

const $ = (id) => document.getElementById(id);

/** Asks before doing something that cannot be undone. Resolves to true for OK. */
export function confirm(title, lines, ok) {
  const dialog = $('confirm');
  $('confirm-title').textContent = title;
  fill($('confirm-body'), lines.map((l) => (l instanceof Node ? l : el('p', { text: l }))));
  $('confirm-ok').textContent = ok;
  dialog.returnValue = '';
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
    dialog.showModal();
    $('confirm-cancel').focus();
  });
}

/** A name for `claude mcp add`: `serena-<project>` with only the characters it accepts. */
export function serverName(projectPath) {
  const base = projectPath.replace(/[\\/]+$/, '').split(/[\\/]/).pop() || 'project';
  const clean = base.replace(/[^A-Za-z0-9_-]+/g, '-').replace(/^-+|-+$/g, '').toLowerCase();
  return `serena-${clean || 'project'}`;
}

async function copy(input, button) {
  input.select();
  let done = false;
  try {
    await navigator.clipboard.writeText(input.value);
    done = true;
  } catch {
    done = document.execCommand?.('copy') ?? false;
  }
  button.textContent = done ? 'Copied' : 'Press Ctrl+C';
  setTimeout(() => {
    button.textContent = 'Copy';
  }, 1500);
}

/** Wires the New session dialog; `onCreated(session)` runs after a successful launch. */
export function setupSessionDialog(onCreated) {
  const dialog = $('session-dialog');
  const form = $('session-form');
  const error = $('session-error');
  const busy = $('session-busy');
  const result = $('session-result');
  const submit = $('session-submit');

  const reset = () => {
    error.hidden = true;
    busy.hidden = true;
    result.hidden = true;
    submit.disabled = false;
  };
  const open = () => {
    if (!dialog.open) {
      reset();
      dialog.showModal();
    }
    $('session-path').focus();
  };
  $('session-close').addEventListener('click', () => dialog.close());
  for (const button of dialog.querySelectorAll('button.copy')) {
    button.addEventListener('click', () => copy($(button.dataset.copy), button));
  }
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    reset();
    const path = $('session-path').value.trim();
    if (!path) {
      error.textContent = 'Enter the absolute path of a project directory.';
      error.hidden = false;
      return;
    }
    const body = { project_path: path, transport: $('session-transport').value };
    const context = $('session-context').value.trim();
    if (context) body.context = context;
    submit.disabled = true;
    busy.hidden = false;
    try {
      const session = await post('/request-session', body);
      busy.hidden = true;
      $('session-id').textContent = session.session_id;
      $('session-url').value = session.url;
      const transport = body.transport === 'sse' ? 'sse' : 'http';
      $('session-claude').value = `claude mcp add --transport ${transport} ${serverName(path)} ${session.url}`;
      result.hidden = false;
      onCreated(session);
    } catch (err) {
      busy.hidden = true;
      error.textContent = err.message;
      error.hidden = false;
    } finally {
      submit.disabled = false;
    }
  });
  return open;
}

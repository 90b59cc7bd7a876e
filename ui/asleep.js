// The open tab of an asleep session: a shared session whose clients stay attached while it has
// no Serena (never started because no client has called a tool yet, or stopped after
// `sleep_minutes` without a call). It says why and since when, lists the clients, what the
// sleep gives back, and offers Wake now (`POST /api/sessions/{id}/wake`) and Stop
// (`POST /release-session`). Nothing to poll: the event stream says when it wakes.

import { post } from './api.js';
import { asleepLabel } from './sharing.js';
import { el, fill, cue, bytes, hhmm, projectName } from './util.js';

/** Why it sleeps, in one line: `asleep since 14:02, no call for 15 min`. */
export function asleepReason(session) {
  const since = hhmm(session.asleep_since);
  if (session.asleep_reason === 'not_started') return `waiting for its first call since ${since}`;
  const minutes = session.sleep_minutes;
  if (!Number.isFinite(minutes) || minutes <= 0) return `asleep since ${since}`;
  const span = minutes >= 1 ? `${Math.round(minutes)} min` : `${Math.round(minutes * 60)} s`;
  return `asleep since ${since}, no call for ${span}`;
}

export class AsleepPanel {
  /**
   * `entry`: `{key, session}`; `ctx`: `confirm(title, body, ok)` -> Promise<boolean>,
   * `notify(text, kind)`, `woken(pid)`: its Serena is `pid` now (the page follows it).
   */
  constructor(root, entry, ctx) {
    this.root = root;
    this.ctx = ctx;
    this.key = entry.key;
    this.pid = 0;
    this.title = el('h2', { class: 'panel-title' });
    this.reason = el('p', { class: 'asleep-reason' });
    this.factsLine = el('p', { class: 'facts-line' });
    this.givenBack = el('p', { class: 'given-back' });
    this.clients = el('ul', { class: 'plain asleep-clients' });
    this.wakeButton = el('button', { type: 'button', dataset: { action: 'wake' }, onclick: () => this.wake(), text: 'Wake now' });
    this.stopButton = el('button', { type: 'button', class: 'danger', dataset: { action: 'stop' }, onclick: () => this.stop(), text: 'Stop' });
    fill(root,
      el('div', { class: 'panel-head' },
        el('div', { class: 'panel-heading' }, this.title, el('span', { class: 'badge state badge-grey', text: 'asleep' })),
        el('div', { class: 'panel-actions' }, this.wakeButton, this.stopButton)),
      this.reason,
      this.factsLine,
      this.givenBack,
      el('section', { class: 'card', dataset: { section: 'clients' }, 'aria-labelledby': 'h-asleep-clients' },
        el('h3', { id: 'h-asleep-clients', text: 'Attached clients' }), this.clients));
    root.classList.add('asleep');
    this.update(entry);
  }

  update(entry) {
    const s = entry.session;
    this.session = s;
    this.root.dataset.colour = 'grey';
    this.root.dataset.session = s.session_id;
    delete this.root.dataset.pid;
    fill(this.title, el('span', { class: 'cue cue-grey', 'aria-hidden': 'true', text: cue('asleep') }), asleepLabel(s));
    this.reason.textContent = asleepReason(s);
    const facts = [`session ${s.session_id}`, s.project_path];
    if (s.context) facts.push(`context ${s.context}`);
    if (s.on_demand) facts.push('starts on demand');
    this.factsLine.textContent = facts.join(' · ');
    const given = s.given_back_bytes;
    this.givenBack.hidden = !Number.isFinite(given);
    fill(this.givenBack, Number.isFinite(given)
      ? [el('strong', { class: 'memory', dataset: { memoryBytes: String(given) }, text: bytes(given) }),
        ' given back: what its Serena and language servers took when last measured.']
      : []);
    const attached = Array.isArray(s.attached) ? s.attached : [];
    fill(this.clients, attached.length
      ? attached.map((c) => el('li', { class: 'asleep-client', dataset: { clientPid: String(c.client_pid ?? '') } },
        `${c.client_name ?? 'a client'} (PID ${c.client_pid ?? c.pid}), since ${hhmm(c.since)}`))
      : el('li', { class: 'muted', text: 'No client is attached.' }));
  }

  async wake() {
    const s = this.session;
    this.wakeButton.disabled = true;
    this.wakeButton.textContent = 'Waking…';
    try {
      const woken = await post(`/api/sessions/${encodeURIComponent(s.session_id)}/wake`);
      this.ctx.notify(`Session ${s.session_id} on ${projectName(s.project_path)} woke: its Serena is PID ${woken?.pid ?? '?'}.`, 'ok');
      if (woken?.pid) this.ctx.woken(woken.pid);
    } catch (e) {
      this.ctx.notify(`Waking ${asleepLabel(s)} failed: ${e.message}`, 'error');
    } finally {
      this.wakeButton.disabled = false;
      this.wakeButton.textContent = 'Wake now';
    }
  }

  async stop() {
    const s = this.session;
    const n = Array.isArray(s.attached) ? s.attached.length : 0;
    const body = [
      `${asleepLabel(s)} (session ${s.session_id}) ends. It has no Serena running, so nothing is killed.`,
      n ? `Its ${n} attached ${n === 1 ? 'client loses' : 'clients lose'} the session.` : 'No client is attached.',
    ];
    if (!(await this.ctx.confirm(`Stop session ${s.session_id}?`, body, 'Stop'))) return;
    try {
      const r = await post('/release-session', { session_id: s.session_id });
      this.ctx.notify(`Session ${s.session_id}: ${String(r?.status ?? 'released').replaceAll('_', ' ')}.`, 'ok');
    } catch (e) {
      this.ctx.notify(`Stopping ${asleepLabel(s)} failed: ${e.message}`, 'error');
    }
  }

  /** Nothing runs, nothing to poll. */
  async poll() {}

  touched() {}

  destroy() {
    this.root.classList.remove('asleep');
    delete this.root.dataset.session;
  }
}

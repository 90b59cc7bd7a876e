// The open tab: the instance's header (state, facts, actions), why a red one is red and what Kill
// will do, the other Serenas on its project when it does not share with them ("Share from now
// on"), what it costs (memory and CPU of its whole process tree), Serena's eight sections,
// its Logs and its Timeline. Only this panel polls, about once a second, and not while the page
// is hidden (the caller drives `poll`).

import { api, post } from './api.js';
import { SECTIONS, renderSection } from './sections.js';
import { Logs } from './logs.js';
import { Timeline } from './timeline.js';
import { sameProjectText, sameProjectWhy } from './tabs.js';
import { el, fill, label, colour, cue, stateWords, reasonText, client, ago, bytes, percent, clock } from './util.js';

export class Panel {
  /**
   * `ctx`: `session(pid)` -> the live session serving that PID or null; `confirm(title, body,
   * ok)` -> Promise<boolean>; `notify(text, kind)`; `killing(pids)`: this page is killing
   * them (it reports the result itself); `same(key)` -> its same-project group or null;
   * `share(group)`: opens the Clients view on the clients behind that group.
   */
  constructor(root, inst, ctx) {
    this.root = root;
    this.ctx = ctx;
    this.inst = inst;
    this.pid = inst.pid;
    this.key = inst.key;
    this.lastJson = new Map();
    this.logs = new Logs(inst.pid);
    this.timeline = new Timeline(inst.pid);
    this.build();
    this.update(inst);
    this.timeline.load();
  }

  build() {
    this.title = el('h2', { class: 'panel-title' });
    this.badge = el('span', { class: 'badge state' });
    this.factsLine = el('p', { class: 'facts-line' });
    this.actions = el('div', { class: 'panel-actions' });
    this.why = el('div', { class: 'why', role: 'note', hidden: true });
    this.noDashboard = el('p', { class: 'note', hidden: true });
    this.idle = el('p', { class: 'note idle', hidden: true });
    this.same = el('div', { class: 'note same-project', role: 'note', hidden: true });
    this.cost = el('div', { class: 'cost' });
    this.sectionBodies = new Map();
    const card = ([id, title]) => {
      const body = el('div', { class: 'section-body' }, el('p', { class: 'loading', text: 'Loading…' }));
      this.sectionBodies.set(id, body);
      return el('section', { class: 'card', dataset: { section: id }, 'aria-labelledby': `h-${id}` }, el('h3', { id: `h-${id}`, text: title }), body);
    };
    fill(this.root,
      el('div', { class: 'panel-head' },
        el('div', { class: 'panel-heading' }, this.title, this.badge),
        this.actions),
      this.factsLine,
      this.why,
      this.same,
      this.idle,
      this.noDashboard,
      this.cost,
      el('div', { class: 'grid sections' },
        el('div', { class: 'column' }, SECTIONS.slice(0, 4).map(card)),
        el('div', { class: 'column' }, SECTIONS.slice(4).map(card))),
      el('div', { class: 'grid wide' },
        el('section', { class: 'card logs-card', dataset: { section: 'logs' }, 'aria-labelledby': 'h-logs' }, el('h3', { id: 'h-logs', text: 'Logs' }), this.logs.root),
        el('section', { class: 'card', dataset: { section: 'timeline' }, 'aria-labelledby': 'h-timeline' }, el('h3', { id: 'h-timeline', text: 'Timeline' }), this.timeline.root)));
  }

  /** Shows what changed about the instance itself (from the event stream). */
  update(inst) {
    this.inst = inst;
    const c = colour(inst.state);
    this.root.dataset.pid = String(inst.pid);
    this.root.dataset.colour = c;
    fill(this.title, el('span', { class: `cue cue-${c}`, 'aria-hidden': 'true', text: cue(inst.state) }), label(inst));
    this.badge.className = `badge state badge-${c}`;
    this.badge.textContent = stateWords(inst);

    const facts = [`PID ${inst.pid}`];
    if (inst.port) facts.push(`dashboard :${inst.port}`);
    facts.push(inst.transport);
    if (inst.mcp_url) facts.push(inst.mcp_url);
    const who = client(inst);
    if (who) facts.push(`client ${who}${inst.state_reason === 'orphaned' ? ', gone' : ''}`);
    facts.push(`up ${ago(inst.started_at)}`, `via ${String(inst.source).replaceAll('_', ' ')}`);
    if (inst.project_path) facts.push(inst.project_path);
    this.factsLine.textContent = facts.join(' · ');
    const session = this.ctx.session(inst.pid);
    const notes = [];
    if (inst.idle_shutdown_at) {
      notes.push(`Idle since ${clock(inst.idle_since)}; shuts down at ${clock(inst.idle_shutdown_at)} unless it is used before.`);
    }
    if (session?.shared) {
      const clients = Array.isArray(session.attached) ? session.attached : [];
      if (clients.length) {
        const who = clients.map((c) => `${c.client_name ?? 'a client'} (${c.client_pid ?? c.pid})`).join(', ');
        notes.push(`Shared session: ${clients.length} ${clients.length === 1 ? 'client' : 'clients'} attached: ${who}.`);
      } else if (session.linger_until) {
        notes.push(`Shared session with no client: released at ${clock(session.linger_until)} unless one attaches.`);
      }
    }
    if (session?.expires_at) {
      notes.push(`Session lease: released at ${clock(session.expires_at)} unless renewed (every ${Math.round(session.lease_seconds)} s).`);
    }
    this.idle.hidden = !notes.length;
    this.idle.textContent = notes.join(' ');

    this.renderCost(inst);
    this.renderWhy(inst);
    this.renderSame(this.ctx.same(inst.key));
    const dead = inst.state_reason === 'dead';
    const young = Date.now() / 1000 - inst.started_at < 15;
    this.noDashboard.hidden = dead || !!inst.port;
    this.noDashboard.textContent = young
      ? 'Waiting for its dashboard to answer…'
      : 'This instance has no dashboard (it probably lost Serena’s port race with another instance started at the same moment), so its configuration, tool usage and logs cannot be shown. It is still a Serena process: Kill works.';
    // Nothing to fetch from a gone process or one without a dashboard: no empty sections.
    this.root.classList.toggle('no-details', dead || !inst.port);
    this.renderActions(inst);
  }

  renderCost(inst) {
    const cost = inst.cost;
    if (!cost) {
      fill(this.cost, el('p', { class: 'muted', text: inst.state_reason === 'dead' ? 'The process is gone: it costs nothing.' : 'Measuring memory and CPU…' }));
      return;
    }
    const processes = Array.isArray(cost.processes) ? cost.processes : [];
    const parts = processes.map((p, i) => `${i === 0 ? 'Serena' : p.name} ${bytes(p.memory_bytes)}`);
    fill(this.cost,
      el('p', { class: 'cost-total' },
        el('strong', { class: 'memory', dataset: { memoryBytes: String(cost.memory_bytes) }, text: bytes(cost.memory_bytes) }),
        ` memory · CPU ${percent(cost.cpu_percent)} · ${cost.process_count} ${cost.process_count === 1 ? 'process' : 'processes'}`),
      parts.length ? el('p', { class: 'cost-breakdown muted', text: parts.join(', ') }) : null);
  }

  renderWhy(inst) {
    const red = inst.state === 'zombie';
    this.why.hidden = !red;
    if (!red) return;
    const n = inst.cost?.process_count;
    const what = inst.state_reason === 'dead'
      ? 'Kill removes its stale record from the registry; there is no process to stop.'
      : `Kill asks Serena to shut down, then terminates its whole process tree${n ? ` (${n} ${n === 1 ? 'process' : 'processes'})` : ''} and removes it from the registry${inst.cost ? `, freeing about ${bytes(inst.cost.memory_bytes)}` : ''}.`;
    fill(this.why, el('strong', { text: `Why it is red: ${inst.state_reason ?? 'zombie'}. ` }), reasonText(inst.state_reason), ' ', what);
  }

  renderSame(group) {
    this.same.hidden = !group;
    // Rebuilt only when it says something else (the button stays under the pointer).
    const shape = group ? JSON.stringify([group.project, group.members.map((i) => i.key), group.unshared.length, group.memory]) : null;
    if (this.sameShape === shape) return;
    this.sameShape = shape;
    if (!group) {
      fill(this.same);
      return;
    }
    const others = group.members.filter((i) => i.key !== this.key).map(label);
    fill(this.same,
      el('strong', { class: 'same-count', text: `${sameProjectText(group)}: ` }),
      sameProjectWhy(group),
      ` The others: ${others.join(', ')}. `,
      'Sharing makes the clients that start a Serena for this project use one (launch --share).',
      ' ',
      el('button', { type: 'button', class: 'small', dataset: { action: 'share-from-now-on' }, onclick: () => this.shareFromNowOn(), text: 'Share from now on' }));
  }

  /** The group as it is now (sessions load after the instances), not as the button was made. */
  shareFromNowOn() {
    const group = this.ctx.same(this.key);
    if (group) this.ctx.share(group);
  }

  renderActions(inst) {
    const dead = inst.state_reason === 'dead';
    const session = this.ctx.session(inst.pid);
    // Rebuilt only when what they offer changes: a button replaced under the pointer (on every
    // cost update) would swallow the click.
    const shape = JSON.stringify([inst.port, dead, inst.verified_serena, session?.session_id ?? null]);
    if (this.actionsShape === shape) return;
    this.actionsShape = shape;
    const buttons = [];
    if (inst.port && !dead) {
      buttons.push(el('a', { class: 'button', href: `http://127.0.0.1:${inst.port}/dashboard/`, target: '_blank', rel: 'noopener noreferrer', dataset: { action: 'open-dashboard' }, text: 'Open its dashboard' }));
      buttons.push(el('button', { type: 'button', dataset: { action: 'shutdown' }, onclick: () => this.shutdown(), text: 'Shut down' }));
    }
    if (session) buttons.push(el('button', { type: 'button', dataset: { action: 'release' }, onclick: () => this.release(session), text: 'Release session' }));
    buttons.push(el('button', {
      type: 'button',
      class: 'danger',
      dataset: { action: 'kill' },
      disabled: !inst.verified_serena && !dead,
      title: !inst.verified_serena && !dead ? 'Not verified as a Serena process: never killed.' : undefined,
      onclick: () => this.kill(),
      text: dead ? 'Remove record' : 'Kill',
    }));
    fill(this.actions, buttons);
  }

  async act(what, request, done) {
    try {
      const result = await request();
      this.ctx.notify(done(result), 'ok');
    } catch (e) {
      this.ctx.notify(`${what} ${label(this.inst)} failed: ${e.message}`, 'error');
    }
  }

  async kill() {
    const inst = this.inst;
    const n = inst.cost?.process_count;
    const body = [
      `${label(inst)} (${stateWords(inst)}).`,
      inst.state_reason === 'dead'
        ? 'Its process is gone; its record is removed.'
        : `Serena is asked to shut down, then its whole process tree${n ? ` (${n} processes${inst.cost ? `, ${bytes(inst.cost.memory_bytes)}` : ''})` : ''} is terminated.`,
    ];
    if (!(await this.ctx.confirm(`Kill ${label(inst)}?`, body, 'Kill'))) return;
    this.ctx.killing([inst.pid]);
    await this.act('Killing', () => post(`/api/instances/${inst.pid}/kill`), (r) =>
      `Killed ${label(inst)}: ${String(r?.outcome ?? 'done').replaceAll('_', ' ')}, ${r?.tree?.length ?? 0} processes stopped.`);
  }

  async shutdown() {
    const inst = this.inst;
    if (!(await this.ctx.confirm(`Shut down ${label(inst)}?`, ['Serena is asked to exit through its own dashboard; its language servers go with it.'], 'Shut down'))) return;
    await this.act('Shutting down', () => post(`/api/instances/${inst.pid}/shutdown`), () => `Asked ${label(inst)} to shut down.`);
  }

  async release(session) {
    const inst = this.inst;
    if (!(await this.ctx.confirm(`Release session ${session.session_id}?`, [`${label(inst)} and its process tree are stopped.`], 'Release'))) return;
    await this.act('Releasing', () => post('/release-session', { session_id: session.session_id }), (r) =>
      `Session ${session.session_id}: ${String(r?.status ?? 'released').replaceAll('_', ' ')}.`);
  }

  async cancel(execution) {
    // A queued task is simply dropped; a running one is interrupted: ask first, as Serena does.
    if (execution.is_running && !(await this.ctx.confirm(`Cancel ${execution.name}?`, ['It is running: cancelling interrupts it, and what it was doing may be left half done.'], 'Cancel it'))) return;
    try {
      await post(`/api/instances/${this.pid}/executions/${encodeURIComponent(execution.task_id)}/cancel`);
      this.ctx.notify(`Asked ${label(this.inst)} to cancel ${execution.name}.`, 'ok');
    } catch (e) {
      this.ctx.notify(`Could not cancel ${execution.name}: ${e.message}`, 'error');
    }
  }

  /** One round of polling: the sections and the new log lines. */
  async poll() {
    const inst = this.inst;
    if (inst.state_reason === 'dead' || !inst.port) return;
    await Promise.all([this.pollSections(), this.logs.poll()]);
  }

  async pollSections() {
    let sections;
    try {
      sections = (await api(`/api/instances/${this.pid}/overview`))?.sections ?? {};
    } catch (e) {
      for (const [id] of SECTIONS) this.show(id, { ok: false, error: e.message });
      return;
    }
    for (const [id] of SECTIONS) this.show(id, sections[id]);
  }

  show(id, section) {
    const json = JSON.stringify(section ?? null);
    if (this.lastJson.get(id) === json) return;
    this.lastJson.set(id, json);
    const body = this.sectionBodies.get(id);
    // Keep open <details> open across updates.
    const open = [...body.querySelectorAll('details')].map((d) => d.open);
    fill(body, renderSection(id, section, { cancel: (x) => this.cancel(x) }));
    body.querySelectorAll('details').forEach((d, i) => {
      if (open[i]) d.open = true;
    });
    body.closest('section').classList.toggle('failed', !!section && !section.ok);
  }

  /** An event about this instance arrived: its timeline has news. */
  touched() {
    this.timeline.soon();
  }

  destroy() {
    this.timeline.stop();
  }
}

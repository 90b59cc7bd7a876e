// The tab strip: one tab per instance, labelled `<pid> - <PROJECT>` / `<pid> - NO PROJECT`,
// coloured by state with a shape cue and the state in words for screen readers, a small memory
// meter, and the reason, client and age on hover; a "same project" badge on Serenas that run
// beside others on their project without sharing; and one grey tab per asleep session,
// `asleep - <PROJECT>`. Tabs are reconciled in place (an update never
// rebuilds the strip, so focus and scroll survive), keep the order they are given, and follow the
// WAI-ARIA tabs pattern: one tab in the focus order, arrow keys, Home and End move and select.

import { asleepLabel } from './sharing.js';
import { asleepReason } from './asleep.js';
import { el, fill, label, colour, cue, stateWords, client, ago, bytes, percent, clock, hhmm } from './util.js';

/** The badge's words on a Serena that runs beside others on its project. */
export function sameProjectText(group) {
  return `same project x${group.members.length}`;
}

/** Why the badge is there, for its tooltip and the panel. */
export function sameProjectWhy(group) {
  const shared = group.members.length - group.unshared.length;
  const which = shared ? ` (${shared} of them ${shared === 1 ? 'a shared session' : 'shared sessions'})` : '';
  return `${group.members.length} Serenas run on ${group.project}${which}, together ${bytes(group.memory)}. `
    + 'Two Serenas on one project index into one language-server workspace at once, which users '
    + 'report as corrupted indexes and runaway CPU (Java above all).';
}

export class Tabs {
  constructor(root, onSelect) {
    this.root = root;
    this.onSelect = onSelect;
    this.nodes = new Map();
    this.selected = null;
    root.addEventListener('keydown', (e) => this.keydown(e));
  }

  /**
   * Shows `instances` (already in display order: instances, then asleep sessions' entries);
   * `same` maps an instance key to its same-project group (see sharing.js `duplicates`).
   */
  render(instances, same = new Map()) {
    const largest = Math.max(1, ...instances.map((i) => i.cost?.memory_bytes ?? 0));
    const seen = new Set();
    let previous = null;
    for (const inst of instances) {
      seen.add(inst.key);
      let node = this.nodes.get(inst.key);
      if (!node) {
        node = this.create(inst.key);
        this.nodes.set(inst.key, node);
      }
      if (inst.state === 'asleep') this.updateAsleep(node, inst);
      else this.update(node, inst, largest, same.get(inst.key));
      const wanted = previous ? previous.nextSibling : this.root.firstChild;
      if (wanted !== node) this.root.insertBefore(node, wanted);
      previous = node;
    }
    for (const [key, node] of this.nodes) {
      if (!seen.has(key)) {
        node.remove();
        this.nodes.delete(key);
      }
    }
    this.root.hidden = instances.length === 0;
    this.mark();
  }

  create(key) {
    const node = el('button', {
      type: 'button',
      role: 'tab',
      class: 'tab',
      id: `tab-${key.replace(/[^0-9a-z]/gi, '-')}`,
      'aria-controls': 'panel',
      dataset: { key },
      onclick: () => this.onSelect(key, true),
    });
    node.append(
      el('span', { class: 'cue', 'aria-hidden': 'true' }),
      el('span', { class: 'tab-label' }),
      el('span', { class: 'sr-only tab-state' }),
      el('span', { class: 'tab-same', hidden: true }),
      el('span', { class: 'tab-meter', 'aria-hidden': 'true' }, el('span', { class: 'meter-bar' }), el('span', { class: 'meter-text' })),
    );
    return node;
  }

  /** An asleep session's tab: grey, `asleep - <PROJECT>`, the reason and clients on hover. */
  updateAsleep(node, entry) {
    const s = entry.session;
    delete node.dataset.pid;
    delete node.dataset.reason;
    delete node.dataset.memoryBytes;
    node.dataset.session = s.session_id;
    node.dataset.state = 'asleep';
    node.dataset.colour = 'grey';
    node.className = 'tab tab-grey tab-asleep';
    node.querySelector('.cue').textContent = cue('asleep');
    node.querySelector('.tab-label').textContent = asleepLabel(s);
    node.querySelector('.tab-state').textContent = `, ${asleepReason(s)}`;
    node.querySelector('.tab-same').hidden = true;
    const given = s.given_back_bytes;
    const meter = node.querySelector('.tab-meter');
    meter.hidden = true;
    const attached = Array.isArray(s.attached) ? s.attached : [];
    const lines = [`${asleepLabel(s)}: ${asleepReason(s)}`];
    for (const c of attached) lines.push(`Client: ${c.client_name ?? '?'} (${c.client_pid ?? c.pid}) since ${hhmm(c.since)}`);
    if (Number.isFinite(given)) lines.push(`Gives back ${bytes(given)}`);
    node.title = lines.join('\n');
  }

  update(node, inst, largest, same) {
    const c = colour(inst.state);
    delete node.dataset.session;
    node.dataset.pid = String(inst.pid);
    node.dataset.state = inst.state;
    node.dataset.colour = c;
    if (inst.state_reason) node.dataset.reason = inst.state_reason;
    else delete node.dataset.reason;
    node.className = `tab tab-${c}`;
    node.querySelector('.cue').textContent = cue(inst.state);
    node.querySelector('.tab-label').textContent = label(inst);
    const mem = inst.cost?.memory_bytes;
    node.querySelector('.tab-state').textContent = `, ${stateWords(inst)}${mem ? `, ${bytes(mem)}` : ''}`;
    const badge = node.querySelector('.tab-same');
    badge.hidden = !same;
    badge.textContent = same ? `${sameProjectText(same)} · ${bytes(same.memory)}` : '';
    if (same) badge.dataset.memoryBytes = String(same.memory);
    else delete badge.dataset.memoryBytes;
    if (same) badge.title = `${sameProjectWhy(same)} Open the tab to share from now on.`;
    else badge.removeAttribute('title');
    const meter = node.querySelector('.tab-meter');
    if (Number.isFinite(mem)) {
      meter.hidden = false;
      node.dataset.memoryBytes = String(mem);
      meter.querySelector('.meter-bar').style.setProperty('--fill', `${Math.max(4, (100 * mem) / largest)}%`);
      meter.querySelector('.meter-text').textContent = bytes(mem);
    } else {
      meter.hidden = true;
      delete node.dataset.memoryBytes;
    }
    const lines = [`${label(inst)}: ${stateWords(inst)}`];
    if (inst.state === 'zombie' && inst.state_reason) lines.push(`Why: ${inst.state_reason}`);
    const who = client(inst);
    if (who) lines.push(`Client: ${who}`);
    lines.push(`Up ${ago(inst.started_at)}, seen ${ago(inst.first_seen)} ago`);
    if (inst.cost) lines.push(`${bytes(inst.cost.memory_bytes)}, CPU ${percent(inst.cost.cpu_percent)}, ${inst.cost.process_count} processes`);
    if (inst.idle_shutdown_at) lines.push(`Idle since ${clock(inst.idle_since)}; shuts down at ${clock(inst.idle_shutdown_at)}`);
    if (same) lines.push(sameProjectText(same));
    node.title = lines.join('\n');
  }

  /** Marks `key` as the open tab (does not call back). */
  select(key) {
    this.selected = key;
    this.mark();
  }

  mark() {
    let any = false;
    for (const [key, node] of this.nodes) {
      const on = key === this.selected;
      any ||= on;
      node.setAttribute('aria-selected', on ? 'true' : 'false');
      node.tabIndex = on ? 0 : -1;
    }
    if (!any && this.root.firstChild) this.root.firstChild.tabIndex = 0;
  }

  keydown(e) {
    const tabs = [...this.root.children];
    const at = tabs.indexOf(document.activeElement);
    if (at < 0) return;
    let next = null;
    if (e.key === 'ArrowRight' || e.key === 'ArrowDown') next = (at + 1) % tabs.length;
    else if (e.key === 'ArrowLeft' || e.key === 'ArrowUp') next = (at - 1 + tabs.length) % tabs.length;
    else if (e.key === 'Home') next = 0;
    else if (e.key === 'End') next = tabs.length - 1;
    if (next === null) return;
    e.preventDefault();
    tabs[next].focus();
    this.onSelect(tabs[next].dataset.key, true);
  }

  clear() {
    fill(this.root);
    this.nodes.clear();
  }
}

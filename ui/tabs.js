// The tab strip: one tab per instance, labelled `<pid> - <PROJECT>` / `<pid> - NO PROJECT`,
// coloured by state with a shape cue and the state in words for screen readers, a small memory
// meter, and the reason, client and age on hover. Tabs are reconciled in place (an update never
// rebuilds the strip, so focus and scroll survive), keep the order they are given, and follow the
// WAI-ARIA tabs pattern: one tab in the focus order, arrow keys, Home and End move and select.

import { el, fill, label, colour, cue, stateWords, client, ago, bytes, percent, clock } from './util.js';

export class Tabs {
  constructor(root, onSelect) {
    this.root = root;
    this.onSelect = onSelect;
    this.nodes = new Map();
    this.selected = null;
    root.addEventListener('keydown', (e) => this.keydown(e));
  }

  /** Shows `instances` (already in display order); `largest` scales the memory meters. */
  render(instances) {
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
      this.update(node, inst, largest);
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
      el('span', { class: 'tab-meter', 'aria-hidden': 'true' }, el('span', { class: 'meter-bar' }), el('span', { class: 'meter-text' })),
    );
    return node;
  }

  update(node, inst, largest) {
    const c = colour(inst.state);
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

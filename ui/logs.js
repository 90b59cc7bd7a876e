// The Logs view of an instance: fetched incrementally (`?since=`), held in a bounded buffer,
// filtered by a text box, and following the tail unless the user has scrolled up.

import { api } from './api.js';
import { el, fill } from './util.js';

/** Lines kept in memory per instance view; older ones are dropped. */
export const MAX_LINES = 5000;

const LEVEL = /^\s*(DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL)\b/;

export class Logs {
  constructor(pid) {
    this.pid = pid;
    this.next = 0;
    this.lines = [];
    this.dropped = 0;
    this.filter = '';
    this.follow = true;
    this.view = el('div', { class: 'log-view', role: 'log', 'aria-label': 'Log lines', tabindex: '0' });
    this.view.addEventListener('scroll', () => this.scrolled());
    this.status = el('span', { class: 'muted log-status' });
    this.jump = el('button', { type: 'button', class: 'small', hidden: true, text: 'Follow the tail', onclick: () => this.toBottom() });
    this.input = el('input', { type: 'search', id: 'log-filter', placeholder: 'Filter lines', 'aria-label': 'Filter log lines', autocomplete: 'off', spellcheck: 'false' });
    this.input.addEventListener('input', () => {
      this.filter = this.input.value.toLowerCase();
      this.redraw();
    });
    this.error = el('p', { class: 'error', hidden: true });
    this.root = el('div', { class: 'logs' }, el('div', { class: 'toolbar' }, this.input, this.status, this.jump), this.error, this.view);
  }

  /** Fetches what is new; a restarted or cleared log starts over. */
  async poll() {
    let d;
    try {
      d = await api(`/api/instances/${this.pid}/logs?since=${this.next}`);
    } catch (e) {
      this.showError(`Could not fetch the logs: ${e.message}`);
      return;
    }
    this.showError(null);
    const max = Number.isInteger(d?.max_idx) ? d.max_idx : this.next - 1;
    const messages = Array.isArray(d?.messages) ? d.messages : [];
    if (max < this.next - 1) {
      // The instance's log went backwards (cleared): start again from its beginning.
      this.lines = [];
      this.dropped = 0;
      this.next = 0;
      this.redraw();
      return;
    }
    this.next = max + 1;
    this.add(messages.map(String));
  }

  add(messages) {
    if (!messages.length) return this.updateStatus();
    this.lines.push(...messages);
    const over = this.lines.length - MAX_LINES;
    if (over > 0) {
      this.lines.splice(0, over);
      this.dropped += over;
      this.redraw();
      return;
    }
    const nodes = messages.filter((m) => this.matches(m)).map(line);
    this.view.append(...nodes);
    this.updateStatus();
    if (this.follow) this.toBottom();
  }

  matches(message) {
    return !this.filter || message.toLowerCase().includes(this.filter);
  }

  redraw() {
    fill(this.view, this.lines.filter((m) => this.matches(m)).map(line));
    this.updateStatus();
    if (this.follow) this.toBottom();
  }

  updateStatus() {
    const shown = this.view.childElementCount;
    const total = this.lines.length;
    const parts = [this.filter ? `${shown} of ${total} lines` : `${total} lines`];
    if (this.dropped) parts.push(`${this.dropped} older dropped`);
    this.status.textContent = parts.join(', ');
  }

  scrolled() {
    const v = this.view;
    this.follow = v.scrollTop + v.clientHeight >= v.scrollHeight - 8;
    this.jump.hidden = this.follow;
  }

  toBottom() {
    this.view.scrollTop = this.view.scrollHeight;
    this.follow = true;
    this.jump.hidden = true;
  }

  showError(message) {
    this.error.hidden = !message;
    this.error.textContent = message ?? '';
  }
}

function line(message) {
  const level = LEVEL.exec(message)?.[1]?.toLowerCase() ?? '';
  return el('div', { class: `log-line ${level}` }, message);
}

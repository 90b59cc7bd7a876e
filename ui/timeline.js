// The Timeline of an instance (`/api/instances/{pid}/timeline`, from the daemon's events.jsonl):
// when it was seen, its state changes with their reasons, kills and session events, newest first.

import { api } from './api.js';
import { el, fill, clock, colour } from './util.js';

/** Entries shown at most. */
const SHOWN = 200;

function describe(e) {
  // A timeline line carries what identifies the instance and what changed, at its top level.
  const inst = e.instance ?? e;
  switch (e.type) {
    case 'instance_added':
      return `Seen (${String(inst.source ?? 'discovery').replaceAll('_', ' ')}), ${inst.project_name ? `project ${inst.project_name}` : 'no project'}`;
    case 'state_changed':
      return `${colour(e.from)} → ${colour(e.to)} (${e.to}${e.reason ? `: ${e.reason}` : ''})`;
    case 'instance_updated':
      return inst.project_name ? `Updated: project ${inst.project_name}` : 'Updated';
    case 'instance_removed':
      return 'Gone';
    case 'instance_killed':
      return `Killed by Serena Tray (${e.outcome ?? 'done'})`;
    case 'session_launching':
      return `Session ${e.session_id ?? ''} launching for ${e.project_path ?? '?'}`;
    case 'session_ready':
      return `Session ${e.session?.session_id ?? ''} ready at ${e.session?.url ?? '?'}`;
    case 'session_failed':
      return `Session failed: ${e.error ?? '?'}`;
    case 'session_released':
      return `Session ${e.session_id ?? ''} released`;
    case 'session_exited':
      return `Session ${e.session_id ?? ''} ended (its Serena exited)`;
    default:
      return String(e.type ?? 'event').replaceAll('_', ' ');
  }
}

export class Timeline {
  constructor(pid) {
    this.pid = pid;
    this.list = el('ol', { class: 'timeline', reversed: true });
    this.error = el('p', { class: 'error', hidden: true });
    this.root = el('div', {}, this.error, this.list);
    this.pending = null;
  }

  async load() {
    let d;
    try {
      d = await api(`/api/instances/${this.pid}/timeline`);
    } catch (e) {
      this.error.hidden = false;
      this.error.textContent = `Could not read the timeline: ${e.message}`;
      return;
    }
    this.error.hidden = true;
    const events = Array.isArray(d?.events) ? d.events.slice(-SHOWN).reverse() : [];
    if (!events.length) {
      fill(this.list, el('li', { class: 'empty', text: 'Nothing recorded yet.' }));
      return;
    }
    fill(this.list, events.map((e) => el('li', { class: `timeline-entry ${e.type ?? ''}` },
      el('time', { text: clock(Number(e.at)) }),
      el('span', { text: describe(e) }))));
  }

  /** Reloads soon (several events in a burst make one request). */
  soon() {
    clearTimeout(this.pending);
    this.pending = setTimeout(() => this.load(), 300);
  }

  stop() {
    clearTimeout(this.pending);
  }
}

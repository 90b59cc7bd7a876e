// The eight sections of an instance's tab, in the order and grouping of Serena's own dashboard,
// rendered from `/api/instances/{pid}/overview`. Each renderer takes the section's `data` and
// returns nodes; a section that could not be fetched says so in place. Everything shown comes
// from the instance and is rendered as text.

import { el, count } from './util.js';

export const SECTIONS = [
  ['current_configuration', 'Current Configuration'],
  ['tool_usage', 'Tool Usage'],
  ['executions_queue', 'Executions Queue'],
  ['last_execution', 'Last Execution'],
  ['registered_projects', 'Registered Projects'],
  ['available_tools', 'Available Tools'],
  ['available_modes', 'Available Modes'],
  ['available_contexts', 'Available Contexts'],
];

const names = (list) => (Array.isArray(list) ? list.map((x) => (typeof x === 'string' ? x : x?.name)).filter(Boolean) : []);
const text = (v) => (v === null || v === undefined || v === '' ? '–' : String(v));
const empty = (message) => el('p', { class: 'empty', text: message });

function facts(rows) {
  return el('dl', { class: 'facts' }, rows.filter(Boolean).map(([k, v, title]) => [el('dt', { text: k }), el('dd', { title }, v)]));
}

function chips(list, activeNames) {
  if (!list.length) return empty('None.');
  return el('ul', { class: 'chips' }, list.map((name) => el('li', { class: activeNames?.has(name) ? 'chip active' : 'chip' }, name)));
}

function currentConfiguration(d) {
  const project = d.active_project;
  const version = d.newer_serena_version
    ? [text(d.serena_version), el('span', { class: 'note', text: ` (newer: ${d.newer_serena_version})` })]
    : text(d.serena_version);
  const tools = names(d.active_tools);
  return facts([
    ['Serena', version],
    ['Active project', project ? text(project.name) : el('span', { class: 'muted', text: 'none' })],
    project && ['Project path', el('span', { class: 'path', text: text(project.path) })],
    ['Languages', names(d.languages).join(', ') || '–'],
    ['Context', text(d.context?.name), d.context?.description ?? undefined],
    ['Modes', names(d.modes).join(', ') || '–'],
    ['Encoding', text(d.encoding)],
    d.current_client !== undefined && ['Client', text(d.current_client)],
    d.agent_interface && ['Interface', text(d.agent_interface)],
    ['Active tools', el('details', {}, el('summary', { text: `${tools.length} tools` }), chips(tools))],
  ]);
}

function toolUsage(d) {
  const stats = d && typeof d.stats === 'object' && d.stats ? d.stats : {};
  const rows = Object.entries(stats)
    .map(([name, s]) => ({ name, calls: Number(s?.num_times_called) || 0, input: Number(s?.input_tokens) || 0, output: Number(s?.output_tokens) || 0 }))
    .sort((a, b) => b.calls - a.calls || a.name.localeCompare(b.name));
  if (!rows.length) return empty('No tool calls yet.');
  const most = Math.max(1, ...rows.map((r) => r.calls));
  const withTokens = rows.some((r) => r.input || r.output);
  return el('ol', { class: 'bars' }, rows.map((r) => {
    const bar = el('span', { class: 'bar' });
    bar.style.setProperty('--fill', `${(100 * r.calls) / most}%`);
    return el('li', { class: 'bar-row' },
      el('span', { class: 'bar-name', text: r.name }),
      el('span', { class: 'bar-track' }, bar),
      el('span', { class: 'bar-value', text: `${r.calls} ${r.calls === 1 ? 'call' : 'calls'}` }),
      withTokens ? el('span', { class: 'bar-tokens', text: `${count(r.input)} in · ${count(r.output)} out tokens` }) : null);
  }));
}

function executionLine(x, cancel) {
  const state = x.is_running ? 'running' : x.finished_successfully === false && x.logged ? 'failed' : x.finished_successfully ? 'done' : 'queued';
  return el('li', { class: `execution ${state}`, dataset: { taskId: String(x.task_id) } },
    el('span', { class: 'exec-state', text: state }),
    el('span', { class: 'exec-name', text: text(x.name) }),
    el('span', { class: 'exec-id muted', text: `#${x.task_id}` }),
    cancel ? el('button', { type: 'button', class: 'small quiet', onclick: () => cancel(x), text: 'Cancel' }) : null);
}

function executionsQueue(d, ctx) {
  const list = Array.isArray(d?.queued_executions) ? d.queued_executions : [];
  if (!list.length) return empty('Nothing queued.');
  return el('ul', { class: 'executions' }, list.map((x) => executionLine(x, ctx.cancel)));
}

function lastExecution(d) {
  const x = d?.last_execution;
  if (!x) return empty('No execution yet.');
  return el('ul', { class: 'executions' }, executionLine(x, null));
}

function registeredProjects(d) {
  const list = Array.isArray(d?.registered_projects) ? d.registered_projects : [];
  if (!list.length) return empty('No registered project.');
  return el('ul', { class: 'list' }, list.map((p) => el('li', { class: p.is_active ? 'active' : '' },
    el('span', { class: 'item-name', text: text(p.name) }),
    p.is_active ? el('span', { class: 'badge', text: 'active' }) : null,
    el('span', { class: 'path muted', text: text(p.path) }))));
}

function availableTools(d) {
  const active = new Set(names(d?.active_tools));
  const all = names(d?.available_tools);
  const disabled = all.filter((t) => !active.has(t));
  return el('div', {},
    el('p', { class: 'muted', text: `${active.size} active, ${disabled.length} disabled` }),
    chips([...active].sort(), active),
    disabled.length ? el('details', {}, el('summary', { text: 'Disabled tools' }), chips(disabled)) : null);
}

function activeList(list, extraActive) {
  const items = Array.isArray(list) ? list : [];
  if (!items.length) return empty('None.');
  return el('ul', { class: 'chips' }, items.map((m) => {
    const name = typeof m === 'string' ? m : m?.name;
    const on = m?.is_active || extraActive.has(name);
    return el('li', { class: on ? 'chip active' : 'chip', title: m?.path ?? undefined }, name, on ? el('span', { class: 'sr-only', text: ' (active)' }) : null);
  }));
}

const availableModes = (d) => activeList(d?.available_modes, new Set(names(d?.modes)));
const availableContexts = (d) => activeList(d?.available_contexts, new Set(names([d?.context])));

const RENDER = {
  current_configuration: currentConfiguration,
  tool_usage: toolUsage,
  executions_queue: executionsQueue,
  last_execution: lastExecution,
  registered_projects: registeredProjects,
  available_tools: availableTools,
  available_modes: availableModes,
  available_contexts: availableContexts,
};

/** The body of one section: its content, or why it is missing. */
export function renderSection(id, section, ctx) {
  if (!section) return empty('Not reported.');
  if (!section.ok) return el('p', { class: 'error', text: `Could not fetch this from the instance: ${section.error}` });
  try {
    return RENDER[id](section.data ?? {}, ctx);
  } catch (e) {
    return el('p', { class: 'error', text: `Could not show this: ${e.message}` });
  }
}

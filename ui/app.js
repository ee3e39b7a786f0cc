// tracegate web UI: plain JavaScript, no build step, no dependencies.
//
// Views, chosen by the URL fragment (so the gateway serves one page):
//   #/                     runs (filtered), charts, the latest calls
//   #/sessions             sessions, with a run or without, and the calls
//                          without a session
//   #/run/<run_id>         a run: its sessions with their steps as a tree (by
//                          parent links) and as a waterfall timeline; charts
//   #/session/<session_id> a session: its steps and the harness's own spans
//                          as one tree and one waterfall; a span's
//                          attributes, events and resource on click
//   #/call/<trace_id>      one call: the previous and next step, messages,
//                          answer, tool calls, usage, token ids with
//                          logprobs, raw request and response
//
// Steps: the retries of a step (the store marks each call's `attempt` and
// the first attempt it retries, `retry_of`) are drawn as one step with its
// attempts, the last attempt's outcome the step's. Calls without a model
// (operation `other`: a model list, a token count) are left out of the
// trees, waterfalls and charts unless "other calls" is ticked.
//
// The lists and the charts take a time range (the picker above them); it
// and the "other calls" switch are kept in localStorage.
//
// Harness spans: a harness that sends its own OpenTelemetry spans (POST
// /v1/traces: `invoke_agent`, `execute_tool`, ...) has them drawn in its
// session's tree and waterfall with the calls: a span under its parent span,
// a call under the span its `traceparent` named (/ui/api/sessions/<id>/spans
// lists each span's calls, one request for the whole session). Tool spans
// are drawn distinctly; clicking a span opens its detail pane.
//
// Live updates: a poller asks /ui/api/calls for the calls committed since
// its cursor and hands them to the current view, which refreshes itself.
//
// Everything shown from a record is model or user output, i.e. untrusted:
// it only ever enters the page as text (textContent, SVG text nodes), never
// as HTML. The gateway also serves this page under a strict CSP.
'use strict';

// ---------------------------------------------------------------------------
// Talking to the gateway

// The gateway's root URL: this page is served at <root>/ui/.
const ROOT = new URL('../', location.href.split('#')[0]);

// Every request to the gateway goes through here. When inbound auth is on,
// this is the one place that adds the credentials: on a 401 it asks the
// user for the gateway token (once, however many requests were refused),
// keeps it for this tab only (sessionStorage) and retries.
async function request(path, params) {
  const url = new URL(path, ROOT);
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.set(key, String(value));
  }
  for (;;) {
    const headers = { Accept: 'application/json', ...(await credentials()) };
    const response = await fetch(url, { headers, credentials: 'same-origin' });
    let body = null;
    try {
      body = await response.json();
    } catch {
      // Not JSON: reported below by status.
    }
    if (response.status === 401) {
      const refused = Boolean(sessionStorage.getItem(TOKEN_KEY));
      await askForToken(refused ? 'That token was not accepted.' : 'This gateway needs a token.');
      continue;
    }
    if (!response.ok) {
      const error = new Error((body && body.error && body.error.message) || `HTTP ${response.status}`);
      error.status = response.status;
      throw error;
    }
    return body;
  }
}

// ---------------------------------------------------------------------------
// Inbound auth

const TOKEN_KEY = 'tracegate.token';
// How the gateway wants the token ({header, scheme}, from the public
// /health), fetched once, when a token is first needed.
let authScheme = null;
// The one open token dialog, shared by every refused request.
let tokenPrompt = null;

async function credentials() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return {};
  if (!authScheme) {
    const health = await fetch(new URL('health', ROOT)).then((r) => r.json()).catch(() => ({}));
    authScheme = (health && health.auth) || {};
  }
  const header = authScheme.header || 'authorization';
  return { [header]: authScheme.scheme === null ? token : `Bearer ${token}` };
}

function askForToken(message) {
  if (!tokenPrompt) {
    sessionStorage.removeItem(TOKEN_KEY);
    tokenPrompt = new Promise((resolve) => {
      const input = h('input', { type: 'password', name: 'token', autocomplete: 'current-password', required: true, 'aria-label': 'Gateway token' });
      const dialog = h('dialog', { class: 'login' },
        h('form', {
          method: 'dialog',
          onsubmit: () => {
            sessionStorage.setItem(TOKEN_KEY, input.value.trim());
            dialog.remove();
            tokenPrompt = null;
            resolve();
          },
        },
        h('h2', null, 'Gateway token'),
        h('p', { class: 'message' }, message),
        h('p', { class: 'muted' }, 'The gateway was started with inbound auth (auth.tokens). The token is kept in this tab only.'),
        input,
        h('button', { type: 'submit' }, 'Open')));
      // Escape would close the dialog without a token: keep it open.
      dialog.addEventListener('cancel', (event) => event.preventDefault());
      document.body.append(dialog);
      dialog.showModal();
      input.focus();
    });
  }
  return tokenPrompt;
}

// ---------------------------------------------------------------------------
// DOM helpers

// h('div', {class: 'x', onclick: f, data: {step: 2}}, child, 'text', [more])
function h(tag, props, ...children) {
  return build(document.createElement(tag), props, children);
}

// The same for SVG elements.
function s(tag, props, ...children) {
  return build(document.createElementNS('http://www.w3.org/2000/svg', tag), props, children);
}

function build(el, props, children) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'data') {
      for (const [name, v] of Object.entries(value)) if (v !== undefined && v !== null) el.dataset[name] = v;
    } else el.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

// A table head; a label starting with '#' heads a numeric (right-aligned)
// column, without the '#'.
function thead(...labels) {
  return h('thead', null, h('tr', null, labels.map((label) => (label.startsWith('#')
    ? h('th', { class: 'num' }, label.slice(1))
    : h('th', null, label)))));
}

function replace(el, ...children) {
  el.replaceChildren();
  return build(el, null, children);
}

const $ = (selector, root) => (root || document).querySelector(selector);

// ---------------------------------------------------------------------------
// Formatting

function fmtMs(ms) {
  if (ms === null || ms === undefined) return '–';
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 10) return `${ms.toFixed(1)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}

function fmtInt(n) {
  return n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US');
}

// A cost in US dollars; a cheap call costs fractions of a cent. None
// (no [[prices]] entry matched) is left out, never shown as $0.
function fmtUsd(usd) {
  if (usd === null || usd === undefined) return null;
  return `$${Number(usd).toFixed(usd >= 1 ? 2 : 6)}`;
}

// Stored times are RFC 3339 UTC with microseconds; Date.parse keeps only
// milliseconds, so the fraction is added separately (sub-ms waterfalls).
function parseTime(text) {
  const m = /^(.{19})(\.\d+)?(Z|[+-]\d\d:\d\d)$/.exec(text || '');
  if (!m) return NaN;
  return Date.parse(m[1] + m[3]) + (m[2] ? Number(m[2]) * 1000 : 0);
}

const pad = (n, w = 2) => String(n).padStart(w, '0');

function fmtWhen(text) {
  const t = parseTime(text);
  if (Number.isNaN(t)) return text || '–';
  const d = new Date(t);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${fmtClock(t)}`;
}

function fmtClock(ms, precise) {
  const d = new Date(ms);
  const clock = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return precise ? `${clock}.${pad(d.getMilliseconds(), 3)}` : clock;
}

const plural = (n, word) => `${fmtInt(n)} ${word}${n === 1 ? '' : 's'}`;

function pretty(value) {
  if (typeof value === 'string') {
    try {
      return JSON.stringify(JSON.parse(value), null, 2);
    } catch {
      return value;
    }
  }
  return JSON.stringify(value, null, 2);
}

// A session id without its run's prefix, when it has one (demo-style ids).
function shortSession(sessionId, runId) {
  if (!sessionId) return '(no session)';
  if (runId && sessionId.startsWith(runId) && sessionId.length > runId.length) return '…' + sessionId.slice(runId.length);
  return sessionId;
}

function statusBadge(status, http) {
  const label = http && status !== 'ok' ? `${status} ${http}` : status;
  return h('span', { class: `badge ${statusClass(status)}` }, label);
}

const statusClass = (status) => (status === 'ok' ? 'ok' : status === 'client_closed' ? 'closed' : 'error');

const callHref = (traceId) => `#/call/${encodeURIComponent(traceId)}`;
const runHref = (runId) => `#/run/${encodeURIComponent(runId)}`;

// What a call answered, in one line.
function answerLine(call) {
  if (call.tool_call) return `tool call ${call.tool_call}(…)`;
  if (call.error && call.error.message) return call.error.message;
  return call.preview || '';
}

const sessionHref = (sessionId) => `#/session/${encodeURIComponent(sessionId)}`;

// "step 3", or "call" for a call without a step id.
const stepLabel = (c) => (c.step_id !== null && c.step_id !== undefined ? `step ${c.step_id}` : 'call');

const isOther = (c) => c.operation === 'other';

// What a call did: its operation and model, or for a call without a model
// (`other`), its method and path.
const opLabel = (c) => (isOther(c) ? `other ${c.method || ''} ${c.path || ''}` : `${c.operation} ${c.model || ''}`);

// ---------------------------------------------------------------------------
// Preferences: the time range, and whether calls without a model show

const PREFS_KEY = 'tracegate.prefs';
const prefs = (() => {
  const defaults = { range: 'all', from: '', to: '', showOther: false };
  try {
    return { ...defaults, ...JSON.parse(localStorage.getItem(PREFS_KEY) || '{}') };
  } catch {
    return defaults;
  }
})();

function savePrefs() {
  try {
    localStorage.setItem(PREFS_KEY, JSON.stringify(prefs));
  } catch {
    // No storage (a private window): kept for this page only.
  }
}

// The time ranges offered: [value, label, seconds back from now].
const RANGES = [['15m', 'Last 15 minutes', 900], ['1h', 'Last hour', 3600], ['24h', 'Last 24 hours', 86400],
  ['7d', 'Last 7 days', 604800], ['all', 'All time', null], ['custom', 'From … to …', null]];

// The range as the endpoints take it: {since, until}, epoch seconds; an
// absent end is open. Relative ranges end now, so live updates slide them.
function rangeParams() {
  const preset = RANGES.find(([value]) => value === prefs.range);
  if (preset && preset[2]) return { since: Math.floor(Date.now() / 1000) - preset[2] };
  if (prefs.range !== 'custom') return {};
  const at = (text) => {
    const t = text ? new Date(text).getTime() : NaN; // datetime-local: local time
    return Number.isNaN(t) ? undefined : t / 1000;
  };
  return { since: at(prefs.from), until: at(prefs.to) };
}

// The time picker of the lists and charts: a preset, or from … to ….
function rangePicker(onChange) {
  const changed = () => { savePrefs(); onChange(); };
  const from = h('input', { type: 'datetime-local', class: 'range-from', 'aria-label': 'From', value: prefs.from, onchange: () => { prefs.from = from.value; changed(); } });
  const to = h('input', { type: 'datetime-local', class: 'range-to', 'aria-label': 'To', value: prefs.to, onchange: () => { prefs.to = to.value; changed(); } });
  const custom = h('span', { class: 'range-custom', hidden: prefs.range !== 'custom' }, from, ' to ', to);
  const select = h('select', {
    class: 'range', 'aria-label': 'Time range',
    onchange: () => { prefs.range = select.value; custom.hidden = prefs.range !== 'custom'; changed(); },
  }, RANGES.map(([value, label]) => h('option', { value, selected: value === prefs.range }, label)));
  return h('div', { class: 'time-range' }, h('span', { class: 'label' }, 'Time range'), select, custom);
}

// The "other calls" switch, with how many there are.
function otherToggle(count, onChange) {
  const box = h('input', {
    type: 'checkbox', class: 'show-other', checked: prefs.showOther,
    onchange: () => { prefs.showOther = box.checked; savePrefs(); onChange(); },
  });
  return h('label', { class: 'check other-toggle', title: 'Calls without a model (model lists, token counts, unknown paths)' },
    box, count === undefined ? 'other calls' : `other calls (${fmtInt(count)})`);
}

// ---------------------------------------------------------------------------
// Copying ids

// A button that copies `text` to the clipboard and says it did.
function copyButton(text, what) {
  const button = h('button', {
    type: 'button', class: 'copy', title: `Copy the ${what}`, 'aria-label': `Copy the ${what}`, data: { copy: text },
    onclick: async (event) => {
      event.preventDefault();
      event.stopPropagation();
      const copied = await copyText(text);
      button.textContent = copied ? 'copied' : 'copy failed';
      button.classList.toggle('copied', copied);
      clearTimeout(button.reset);
      button.reset = setTimeout(() => { button.textContent = 'copy'; button.classList.remove('copied'); }, 1500);
    },
  }, 'copy');
  return button;
}

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // Refused: try the selection below.
    }
  }
  // Plain http from another host has no clipboard API: copy a selection.
  const area = h('textarea', { class: 'offscreen', readonly: true });
  area.value = text;
  document.body.append(area);
  area.select();
  let copied = false;
  try {
    copied = document.execCommand('copy');
  } catch {
    copied = false;
  }
  area.remove();
  return copied;
}

// An id, in monospace, linked when `href` is given, with its copy button.
function idWithCopy(text, what, href) {
  return h('span', { class: 'with-copy' },
    href ? h('a', { class: 'id', href }, text) : h('span', { class: 'id' }, text), ' ', copyButton(text, what));
}

// ---------------------------------------------------------------------------
// Steps: calls with their retries folded in

const byStart = (a, b) => (a.started_at < b.started_at ? -1 : a.started_at > b.started_at ? 1
  : a.trace_id < b.trace_id ? -1 : a.trace_id > b.trace_id ? 1 : 0);

// `calls` as steps, in the order the steps began: a call and its retries
// (the calls whose `retry_of` names it) become one step, which is its last
// attempt's fields plus `attempts` (every attempt, first to last). Only the
// steps `keep` accepts are returned.
function stepsOf(calls, keep) {
  const groups = new Map();
  for (const c of [...calls].sort(byStart)) {
    const key = c.retry_of || c.trace_id;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(c);
  }
  const steps = [...groups.values()].map((attempts) => ({ ...attempts[attempts.length - 1], attempts }));
  return steps.filter(keep || (() => true)).sort((a, b) => byStart(a.attempts[0], b.attempts[0]));
}

// Whether a step is drawn: calls without a model only when asked for.
const shown = (step) => prefs.showOther || !isOther(step);

// ---------------------------------------------------------------------------
// Harness spans: the harness's own OpenTelemetry spans, beside the calls

// A span's key among the tree's nodes (a step's is its trace id).
const spanKey = (traceId, spanId) => `span:${traceId}:${spanId}`;
const keyOf = (node) => (node.isSpan ? node.key : node.trace_id);

// What a span is, by the GenAI conventions: `tool` (execute_tool), `agent`
// (invoke_agent, create_agent) or `generic` (anything else); from its
// `gen_ai.operation.name`, else its name's first word.
function spanKind(span) {
  const op = span.attributes && span.attributes['gen_ai.operation.name'];
  const word = typeof op === 'string' && op ? op : String(span.name || '').split(' ')[0];
  if (word === 'execute_tool') return 'tool';
  if (word === 'invoke_agent' || word === 'create_agent') return 'agent';
  return 'generic';
}

// The tag a kind of span carries in the tree and its pane.
const kindTag = (kind) => h('span', { class: `tag kind ${kind}` }, kind === 'generic' ? 'span' : kind);

// "tool bash", "agent solver", or the span's name.
function spanLabel(span) {
  const kind = spanKind(span);
  const attr = (key) => (span.attributes && typeof span.attributes[key] === 'string' ? span.attributes[key] : '');
  const rest = String(span.name || '').split(' ').slice(1).join(' ');
  if (kind === 'tool') return `tool ${attr('gen_ai.tool.name') || rest || '?'}`;
  if (kind === 'agent') return `agent ${attr('gen_ai.agent.name') || rest}`.trim();
  return span.name || 'span';
}

// A span's outcome as the page draws it: only an ERROR status is a failure.
const spanFailed = (span) => span.status_code === 'error';

// The spans as tree nodes, each with its start for ordering.
const spanNodesOf = (spans) => spans.map((span) => ({
  isSpan: true, key: spanKey(span.trace_id, span.span_id), span, kind: spanKind(span), start: parseTime(span.start),
}));

// Steps and span nodes by start; a stable sort, so that steps starting
// together keep their order.
function inStartOrder(nodes) {
  const start = (n) => (n.isSpan ? n.start : parseTime(n.attempts[0].started_at));
  return nodes.map((n) => [start(n), n]).sort((a, b) => a[0] - b[0]).map(([, n]) => n);
}

// A span's item in the tree: a button opening its pane.
function spanItem(n, onSpan) {
  const span = n.span;
  const calls = (span.calls || []).length;
  return h('li', { class: `span ${n.kind}`, data: { spanId: span.span_id, otelTraceId: span.trace_id, kind: n.kind, parent: span.parent_span_id || '', status: span.status_code } },
    h('button', { type: 'button', class: `node span-node ${n.kind}${spanFailed(span) ? ' error' : ''}`, title: `${span.name}\nspan ${span.span_id}`, onclick: () => onSpan(n) },
      kindTag(n.kind),
      h('span', { class: 'step' }, spanLabel(span)),
      spanFailed(span) ? statusBadge('error', null) : null,
      h('span', { class: 'num' }, fmtMs(span.duration_ms)),
      h('span', { class: 'preview' }, span.status_message || (calls ? plural(calls, 'call') : ''))));
}

// Label indent per enclosing span in the waterfall, in pixels.
const INDENT = 10;

// A span's row of the waterfall at height `y`: agent spans as an outlined
// bracket around what they enclose, tool spans as a teal pill, others grey
// (an error outlined in red).
function spanRow(n, y, { t0, x, span, plot, W, RIGHT, ROW, indent }, onSpan) {
  const sp = n.span;
  const start = parseTime(sp.start) - t0;
  const bx = x(start);
  const bw = Math.max(2, (sp.duration_ms / span) * plot);
  const label = spanLabel(sp);
  const tip = `${label} · ${sp.name}\n${sp.status_code}${sp.status_message ? `: ${sp.status_message}` : ''} · ${fmtMs(sp.duration_ms)}\nstarts at +${fmtMs(start)}`;
  const shape = n.kind === 'agent'
    ? s('rect', { class: 'shape', x: bx, y: y + 3, width: bw, height: ROW - 6, rx: 3 })
    : s('rect', { class: 'shape', x: bx, y: y + 5, width: bw, height: ROW - 10, rx: n.kind === 'tool' ? (ROW - 10) / 2 : 1 });
  return s('g', { class: `bar harness ${n.kind}${spanFailed(sp) ? ' span-error' : ''}`, data: { spanId: sp.span_id, kind: n.kind, status: sp.status_code }, onclick: () => onSpan(n) },
    s('title', null, tip),
    s('rect', { class: 'hit', x: 0, y, width: W, height: ROW }),
    s('text', { class: 'row-label', x: 18 + indent * INDENT, y: y + 15 }, label),
    shape,
    s('text', { class: 'duration', x: Math.min(bx + bw + 4, W - RIGHT + 4), y: y + 15 }, fmtMs(sp.duration_ms)));
}

// A span's pane: status, times, ids, the calls made under it, then its
// attributes, events and resource. Every value is the harness's text.
function spanDetail(span, close) {
  const row = (label, value) => (value === null || value === undefined || value === '' ? null : [h('dt', null, label), h('dd', null, value)]);
  const kind = spanKind(span);
  const who = span.identity || {};
  const calls = span.calls || [];
  const start = parseTime(span.start);
  return [
    h('div', { class: 'panel-head' },
      h('h2', null, kindTag(kind), ' ', span.name, ' ',
        h('span', { class: `badge ${spanFailed(span) ? 'error' : 'ok'}` }, span.status_code)),
      h('button', { type: 'button', class: 'close', onclick: close }, 'close')),
    h('dl', { class: 'facts' },
      row('Status', [span.status_code, span.status_message ? ` · ${span.status_message}` : '']),
      row('Kind', `${spanLabel(span)} · OTel ${span.kind}`),
      row('Started', fmtWhen(span.start)),
      row('Duration', fmtMs(span.duration_ms)),
      row('Calls under it', calls.length ? calls.map((id, i) => [i ? ', ' : '', h('a', { class: 'id', href: callHref(id) }, id)]) : 'none'),
      row('Session', who.session_id ? idWithCopy(who.session_id, 'session id', sessionHref(who.session_id)) : null),
      row('Run', who.run_id ? idWithCopy(who.run_id, 'run id', runHref(who.run_id)) : null),
      row('Step', who.step_id),
      row('Trace id', idWithCopy(span.trace_id, 'OTel trace id')),
      row('Span id', idWithCopy(span.span_id, 'span id')),
      row('Parent span', span.parent_span_id ? h('span', { class: 'id' }, span.parent_span_id) : null)),
    h('h3', null, 'Attributes', h('span', { class: 'count' }, Object.keys(span.attributes || {}).length)),
    Object.keys(span.attributes || {}).length ? kvTable(span.attributes) : h('p', { class: 'empty' }, 'No attributes.'),
    h('h3', null, 'Events', h('span', { class: 'count' }, (span.events || []).length)),
    (span.events || []).length ? h('table', { class: 'events' }, thead('Name', '#At', 'Attributes'),
      h('tbody', null, span.events.map((e) => h('tr', null,
        h('td', null, e.name || ''),
        h('td', { class: 'num' }, `+${fmtMs(parseTime(e.time) - start)}`),
        h('td', null, Object.keys(e.attributes || {}).length ? kvTable(e.attributes) : '')))))
      : h('p', { class: 'empty' }, 'No events.'),
    h('h3', null, 'Resource'),
    Object.keys(span.resource || {}).length ? kvTable(span.resource) : h('p', { class: 'empty' }, 'No resource attributes.'),
  ];
}

// ---------------------------------------------------------------------------
// Routing and live updates

let generation = 0; // bumped on every navigation; stale async renders check it
let current = null; // the current view's hooks: { onCalls(calls), onResize() }

function route() {
  const gen = ++generation;
  current = null;
  window.scrollTo(0, 0);
  let parts;
  try {
    parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  } catch {
    parts = [];
  }
  const view = replace($('#view'), h('p', { class: 'muted' }, 'Loading…'));
  let rendering;
  if (parts[0] === 'run' && parts[1]) rendering = runView(view, parts[1], gen);
  else if (parts[0] === 'sessions') rendering = sessionsView(view, gen);
  else if (parts[0] === 'session' && parts[1]) rendering = sessionView(view, parts[1], gen);
  else if (parts[0] === 'call' && parts[1]) rendering = callView(view, parts[1], gen);
  else rendering = homeView(view, gen);
  rendering.catch((error) => {
    if (gen !== generation) return;
    setCrumbs([]);
    replace(view, h('div', { class: 'panel failure' }, h('h2', null, error.status === 404 ? 'Not found' : 'Could not load this page'), h('p', null, error.message), h('p', null, h('a', { href: '#/' }, 'Back to the runs'))));
  });
}

// The breadcrumbs; the first one (Runs or Sessions) is also the active tab.
function setCrumbs(items) {
  document.title = ['tracegate', ...items.map(([label]) => label)].join(' · ');
  const tab = items.length && items[0][0] === 'Sessions' ? 'sessions' : 'runs';
  for (const link of document.querySelectorAll('#tabs a')) link.classList.toggle('active', link.dataset.tab === tab);
  const nav = replace($('#crumbs'));
  for (const [label, href] of items) {
    nav.append(h('span', { class: 'sep' }, '›'), href ? h('a', { href }, label) : h('span', null, label));
  }
}

const POLL_MS = 2000;
const live = { cursor: null, paused: false };

// Asks for the calls committed since the cursor; the current view decides
// what to refresh. A failed poll is shown on the live button and retried.
async function poll() {
  let delay = POLL_MS;
  if (!live.paused && !document.hidden) {
    try {
      const first = live.cursor === null;
      const page = await request('ui/api/calls', first ? { limit: 1 } : { after: live.cursor, limit: 500 });
      live.cursor = page.cursor;
      if (!first && page.calls.length && current && current.onCalls) {
        Promise.resolve(current.onCalls(page.calls)).catch(reportError);
      }
      if (current && current.onPoll) current.onPoll();
      if (page.truncated && !first) delay = 0;
      setLive('on', 'New calls appear as they are recorded. Click to pause.');
    } catch (error) {
      setLive('error', `Live updates failed: ${error.message}`);
      delay = POLL_MS * 3;
    }
  }
  setTimeout(poll, delay);
}

// A failure outside a page load (a refresh): shown on the live button.
function reportError(error) {
  setLive('error', `Refresh failed: ${error.message}`);
}

function setLive(state, title) {
  const button = $('#live');
  button.className = `live ${live.paused ? 'paused' : state}`;
  button.textContent = live.paused ? 'paused' : state === 'error' ? 'offline' : 'live';
  button.title = live.paused ? 'Live updates paused. Click to resume.' : title;
}

// A guard for a loader whose requests may overlap (a filter changed twice
// quickly): `ask()` before each request returns a check that is true only
// while no later request was asked for, so a late answer to an earlier
// filter never replaces the answer to the latest one.
function newestOnly() {
  let asked = 0;
  return () => {
    const ticket = ++asked;
    return () => ticket === asked;
  };
}

// Runs `fn` at most once per `ms`: calls in between fold into one run at
// the end of the wait.
function throttle(fn, ms) {
  let timer = null;
  let last = 0;
  return () => {
    if (timer) return;
    const wait = Math.max(0, last + ms - Date.now());
    timer = setTimeout(() => {
      timer = null;
      last = Date.now();
      fn();
    }, wait);
  };
}

// ---------------------------------------------------------------------------
// Home: runs, charts, latest calls

const runFilters = { q: '', model: '', harness: '', project: '', experiment: '', errors: false };

async function homeView(view, gen) {
  setCrumbs([['Runs']]);
  const runsBox = h('div', { class: 'runs-box' });
  const recentBox = h('div');
  const filters = filterBar(runFilters, RUN_FILTERS, () => loadRuns().catch(reportError));
  const charts = chartsPanel(() => rangeParams());
  const chartsHead = h('div', { class: 'panel-head' }, h('h2', null, 'Charts'), otherToggle(undefined, () => charts.refresh()));
  const reload = () => Promise.all([loadRuns(), loadRecent(), charts.refresh()]).catch(reportError);
  const [runsTurn, recentTurn] = [newestOnly(), newestOnly()];
  replace(view,
    h('div', { class: 'toolbar' }, rangePicker(reload)),
    h('section', { class: 'panel' }, h('div', { class: 'panel-head' }, h('h2', null, 'Runs'), filters.el), runsBox),
    h('section', { class: 'panel' }, chartsHead, charts.el),
    h('section', { class: 'panel' }, h('h2', null, 'Latest calls'), recentBox));

  async function loadRuns() {
    const newest = runsTurn();
    const page = await request('ui/api/runs', { ...runFilters, errors: runFilters.errors ? 1 : '', ...rangeParams() });
    if (gen !== generation || !newest()) return;
    filters.setFacets(page.facets);
    replace(runsBox, runsTable(page.runs));
  }
  async function loadRecent() {
    const newest = recentTurn();
    const page = await request('ui/api/calls', { limit: 25, ...rangeParams() });
    if (gen !== generation || !newest()) return;
    replace(recentBox, callsTable(page.calls.reverse()));
  }
  await Promise.all([loadRuns(), loadRecent(), charts.refresh()]);
  const refreshCharts = throttle(() => charts.refresh(), 5000);
  const refreshRecent = throttle(() => loadRecent().catch(reportError), 1000);
  current = {
    onCalls() {
      loadRuns().catch(reportError);
      refreshRecent();
      refreshCharts();
    },
  };
}

// What the run and session lists filter on: the search box's text, and
// the facets offered as selects (filter key and `facets` name).
const RUN_FILTERS = {
  search: 'run id contains…', label: 'Search runs',
  facets: { model: 'models', harness: 'harnesses', project: 'projects', experiment: 'experiments' },
};
const SESSION_FILTERS = {
  search: 'session or run id contains…', label: 'Search sessions',
  facets: { model: 'models', harness: 'harnesses' },
};

// A list's filters: text search, facet selects, `extra` elements, "with
// errors"; `state` holds their values.
function filterBar(state, { search: placeholder, label, facets: facetNames }, onChange, extra) {
  let timer = null;
  const search = h('input', {
    type: 'search', placeholder, value: state.q, 'aria-label': label,
    oninput: () => {
      clearTimeout(timer);
      timer = setTimeout(() => { state.q = search.value.trim(); onChange(); }, 250);
    },
  });
  const selects = {};
  for (const key of Object.keys(facetNames)) {
    selects[key] = h('select', { 'aria-label': key, onchange: () => { state[key] = selects[key].value; onChange(); } });
  }
  const errors = h('input', { type: 'checkbox', checked: state.errors, onchange: () => { state.errors = errors.checked; onChange(); } });
  const el = h('div', { class: 'filters' }, search, extra, Object.values(selects), h('label', { class: 'check' }, errors, 'with errors'));
  return {
    el,
    // Refreshes the options, keeping the selection (and hiding empty facets).
    setFacets(facets) {
      for (const [key, plural] of Object.entries(facetNames)) {
        const values = (facets && facets[plural]) || [];
        const select = selects[key];
        const wanted = ['', ...values].join('\n');
        if (select.dataset.values !== wanted) {
          select.dataset.values = wanted;
          replace(select, h('option', { value: '' }, `any ${key}`), values.map((v) => h('option', { value: v }, v)));
          select.value = state[key];
        }
        select.hidden = values.length === 0 && !state[key];
      }
    },
  };
}

function runsTable(runs) {
  if (!runs.length) {
    const filtered = Object.values(runFilters).some(Boolean) || prefs.range !== 'all';
    return h('p', { class: 'empty' }, filtered ? 'No run matches these filters.'
      : 'No runs yet. Send calls with an X-RLLM-Run-Id header, or try `tracegate demo`.');
  }
  return h('table', { class: 'runs' },
    thead('Run', 'Started', '#Duration', '#Sessions', '#Calls', '#Errors', '#Tokens'),
    h('tbody', null, runs.map((run) => h('tr', { data: { runId: run.run_id }, onclick: (e) => { if (!e.target.closest('a')) location.hash = runHref(run.run_id); } },
      h('td', { class: 'id' }, h('a', { href: runHref(run.run_id) }, run.run_id)),
      h('td', null, fmtWhen(run.first_seen)),
      h('td', { class: 'num' }, fmtMs(parseTime(run.last_seen) - parseTime(run.first_seen))),
      h('td', { class: 'num sessions' }, fmtInt(run.session_count)),
      h('td', { class: 'num calls' }, fmtInt(run.trace_count)),
      h('td', { class: 'num errors' }, run.error_count ? h('span', { class: 'badge error' }, fmtInt(run.error_count)) : '0'),
      h('td', { class: 'num tokens' }, fmtInt(run.tokens))))));
}

function callsTable(calls) {
  if (!calls.length) return h('p', { class: 'empty' }, prefs.range !== 'all' ? 'No calls in this time range.' : 'No calls recorded yet.');
  return h('table', { class: 'calls' },
    thead('Time', 'Run · session', '#Step', 'Model', 'Status', '#Latency', '#Tokens', 'Answer'),
    h('tbody', null, calls.map((c) => h('tr', { class: isOther(c) ? 'other' : null, data: { traceId: c.trace_id, operation: c.operation }, onclick: () => { location.hash = callHref(c.trace_id); } },
      h('td', null, fmtClock(parseTime(c.started_at))),
      h('td', { class: 'id' }, c.run_id ? h('a', { href: runHref(c.run_id), onclick: (e) => e.stopPropagation() }, c.run_id) : '–', ' · ',
        c.session_id ? h('a', { href: sessionHref(c.session_id), onclick: (e) => e.stopPropagation() }, shortSession(c.session_id, c.run_id)) : shortSession(null)),
      h('td', { class: 'num' }, c.step_id ?? '–', c.attempt > 1 ? h('span', { class: 'tag retry' }, `attempt ${c.attempt}`) : null),
      h('td', null, isOther(c) ? [h('span', { class: 'tag other' }, 'other'), ` ${c.method} ${c.path}`] : c.model || '–'),
      h('td', null, statusBadge(c.status, c.http_status)),
      h('td', { class: 'num' }, fmtMs(c.latency_ms)),
      h('td', { class: 'num' }, fmtInt((c.usage.input_tokens || 0) + (c.usage.output_tokens || 0))),
      h('td', { class: 'preview' }, h('a', { href: callHref(c.trace_id) }, answerLine(c) || '(empty)'))))));
}

// ---------------------------------------------------------------------------
// Sessions: with a run or without one, and the calls without a session

const sessionFilters = { q: '', run: '', model: '', harness: '', errors: false };

async function sessionsView(view, gen) {
  setCrumbs([['Sessions']]);
  const listBox = h('div', { class: 'sessions-box' });
  const looseBox = h('div', { class: 'loose-box' });
  const runSelect = h('select', { class: 'run-filter', 'aria-label': 'run', onchange: () => { sessionFilters.run = runSelect.value; loadSessions().catch(reportError); } },
    h('option', { value: '', selected: !sessionFilters.run }, 'with or without a run'),
    h('option', { value: 'none', selected: sessionFilters.run === 'none' }, 'without a run'));
  const filters = filterBar(sessionFilters, SESSION_FILTERS, () => loadSessions().catch(reportError), runSelect);
  const reload = () => Promise.all([loadSessions(), loadLoose()]).catch(reportError);
  const [sessionsTurn, looseTurn] = [newestOnly(), newestOnly()];
  replace(view,
    h('div', { class: 'toolbar' }, rangePicker(reload)),
    h('section', { class: 'panel' }, h('div', { class: 'panel-head' }, h('h2', null, 'Sessions'), filters.el), listBox),
    h('section', { class: 'panel' }, h('h2', null, 'Calls without a session'), looseBox));

  async function loadSessions() {
    const { q, run, model, harness, errors } = sessionFilters;
    const newest = sessionsTurn();
    const page = await request('ui/api/sessions', { q, model, harness, no_run: run === 'none' ? 1 : '', errors: errors ? 1 : '', ...rangeParams() });
    if (gen !== generation || !newest()) return;
    filters.setFacets(page.facets);
    replace(listBox, sessionsTable(page.sessions));
  }
  async function loadLoose() {
    const newest = looseTurn();
    const page = await request('ui/api/calls', { no_session: 1, limit: 50, ...rangeParams() });
    if (gen !== generation || !newest()) return;
    replace(looseBox, page.calls.length ? callsTable(page.calls.reverse())
      : h('p', { class: 'empty' }, 'Every call in this time range has a session.'));
  }
  await Promise.all([loadSessions(), loadLoose()]);
  const refresh = throttle(reload, 1000);
  current = { onCalls: refresh };
}

function sessionsTable(sessions) {
  if (!sessions.length) {
    const filtered = Object.values(sessionFilters).some(Boolean) || prefs.range !== 'all';
    return h('p', { class: 'empty' }, filtered ? 'No session matches these filters.'
      : 'No sessions yet. Send calls with an X-RLLM-Session-Id header, or to /sessions/<id>/v1/….');
  }
  return h('table', { class: 'sessions' },
    thead('Session', 'Run', 'Started', '#Duration', '#Calls', '#Errors', '#Tokens', 'Harness', 'Model'),
    h('tbody', null, sessions.map((se) => h('tr', { data: { sessionId: se.session_id, runId: se.run_id || '' }, onclick: (e) => { if (!e.target.closest('a')) location.hash = sessionHref(se.session_id); } },
      h('td', { class: 'id' }, h('a', { href: sessionHref(se.session_id) }, se.session_id)),
      h('td', { class: 'id run' }, se.run_id ? h('a', { href: runHref(se.run_id) }, se.run_id) : h('span', { class: 'muted' }, 'no run')),
      h('td', null, se.first_seen ? fmtWhen(se.first_seen) : fmtWhen(se.created_at)),
      h('td', { class: 'num' }, se.first_seen ? fmtMs(parseTime(se.last_seen) - parseTime(se.first_seen)) : '–'),
      h('td', { class: 'num calls' }, fmtInt(se.trace_count)),
      h('td', { class: 'num errors' }, se.error_count ? h('span', { class: 'badge error' }, fmtInt(se.error_count)) : '0'),
      h('td', { class: 'num tokens' }, fmtInt(se.tokens)),
      h('td', { class: 'harness' }, se.harness || '–'),
      h('td', { class: 'model' }, se.model || '–')))));
}

// ---------------------------------------------------------------------------
// A run: sessions, tree, waterfall, charts

async function runView(view, runId, gen) {
  const [run, page] = await Promise.all([
    request(`runs/${encodeURIComponent(runId)}`),
    request('ui/api/calls', { run_id: runId, limit: 5000 }),
  ]);
  if (gen !== generation) return;
  setCrumbs([['Runs', '#/'], [runId]]);
  const calls = new Map(page.calls.map((c) => [c.trace_id, c]));
  const summary = h('div', { class: 'cards' });
  const charts = chartsPanel(() => ({ run_id: runId }));
  const feedback = h('div', { class: 'feedback' });
  const panels = stepsPanels(runId, () => { draw(); charts.refresh(); });
  replace(view,
    h('h1', null, h('span', { class: 'muted' }, 'run '), runId, ' ', copyButton(runId, 'run id')),
    summary,
    page.truncated ? h('p', { class: 'note' }, `Showing the newest ${page.calls.length} calls of this run.`) : null,
    feedback,
    panels.el,
    h('section', { class: 'panel' }, h('h2', null, 'Charts'), charts.el));

  let info = run;
  function draw() {
    const all = [...calls.values()].sort(byStart);
    const sessions = sessionOrder(info.sessions, all);
    replace(summary, runCards(info, all, sessions));
    replace(feedback, feedbackSummary(info.feedback_summary));
    panels.draw(sessions, all);
  }
  draw();
  await charts.refresh();
  const refreshCharts = throttle(() => charts.refresh(), 5000);
  // A busy run gets new calls every poll; redrawing thousands of rows at
  // most once a second keeps the page responsive.
  const redraw = throttle(async () => {
    const latest = await request(`runs/${encodeURIComponent(runId)}`).catch(reportError);
    if (gen !== generation) return;
    if (latest) info = latest;
    draw();
  }, 1000);
  current = {
    onResize: draw,
    onCalls(fresh) {
      const mine = fresh.filter((c) => c.run_id === runId);
      if (!mine.length) return;
      for (const c of mine) calls.set(c.trace_id, c);
      redraw();
      refreshCharts();
    },
  };
}

// Sessions in the order the run lists them, then any only seen in calls;
// each with its steps as drawn (`steps`) and its calls.
function sessionOrder(listed, calls) {
  const order = (listed || []).map((s) => s.session_id);
  for (const c of calls) if (!order.includes(c.session_id)) order.push(c.session_id);
  const info = new Map((listed || []).map((s) => [s.session_id, s]));
  return order.map((id) => {
    const mine = calls.filter((c) => c.session_id === id);
    return { id, info: info.get(id), calls: stepsOf(mine, shown), all: mine };
  });
}

const card = (label, value, cls) => h('div', { class: `card ${cls || ''}` }, h('div', { class: 'value' }, value), h('div', { class: 'label' }, label));

// The cards every set of steps has: steps, retried steps, other calls,
// wall time, models, harness.
function stepCards(calls, sessions) {
  const steps = sessions.flatMap((se) => se.calls);
  const retried = steps.filter((st) => st.attempts.length > 1).length;
  const others = calls.filter(isOther).length;
  // Wall time spans the calls and the harness spans around them.
  const spans = sessions.flatMap((se) => se.spans || []);
  const starts = [...calls.map((c) => parseTime(c.started_at)), ...spans.map((sp) => parseTime(sp.start))];
  const ends = [...calls.map((c) => parseTime(c.started_at) + c.latency_ms), ...spans.map((sp) => parseTime(sp.start) + sp.duration_ms)];
  const wall = starts.length ? Math.max(...ends) - Math.min(...starts) : 0;
  const harnesses = [...new Set(calls.map((c) => c.harness).filter(Boolean))];
  const models = [...new Set(calls.map((c) => c.model).filter(Boolean))];
  return [
    card('steps', fmtInt(steps.length)),
    retried ? card('retried steps', fmtInt(retried), 'retried') : null,
    others ? card(prefs.showOther ? 'other calls' : 'other calls (hidden)', fmtInt(others), 'other') : null,
    card('wall time', fmtMs(wall)),
    models.length ? card(models.length > 1 ? 'models' : 'model', models.join(', ')) : null,
    harnesses.length ? card('harness', harnesses.join(', ')) : null,
  ];
}

function runCards(run, calls, sessions) {
  return [
    card('sessions', fmtInt(run.session_count)),
    card('calls', fmtInt(run.trace_count)),
    card('errors', fmtInt(run.error_count), run.error_count ? 'bad' : ''),
    card('tokens', fmtInt(run.tokens)),
    run.cost_usd != null ? card('cost', fmtUsd(run.cost_usd)) : null,
    card('started', fmtWhen(run.first_seen)),
    stepCards(calls, sessions),
  ];
}

// The tree and the waterfall of some sessions' steps, side by side, with
// the "other calls" switch; `onToggle` redraws after it flips. A session
// may carry harness spans (`spans`, from /ui/api/sessions/<id>/spans):
// they join its tree and waterfall, and clicking one opens `detail`, the
// span's pane (placed by the caller).
function stepsPanels(runId, onToggle) {
  const tree = h('div', { class: 'tree-box' });
  const waterfallBox = h('div', { class: 'waterfall-box' });
  const toggle = h('span', { class: 'toggle-box' });
  const legendBox = h('span', { class: 'legend-box' }, legend(false));
  const detail = h('section', { class: 'panel span-detail', hidden: true });
  let selected = null; // the key of the span whose pane is open
  const el = h('div', { class: 'run-grid' },
    h('section', { class: 'panel' }, h('div', { class: 'panel-head' }, h('h2', null, 'Sessions and steps'), toggle), tree),
    h('section', { class: 'panel' }, h('div', { class: 'panel-head' }, h('h2', null, 'Timeline'), legendBox), waterfallBox));
  let links = new Map(); // node key -> the elements that show it, for hover highlighting
  const mark = () => {
    for (const x of el.querySelectorAll('.selected')) x.classList.remove('selected');
    for (const x of links.get(selected) || []) x.classList.add('selected');
  };
  const open = (n) => {
    selected = n ? n.key : null;
    detail.hidden = !n;
    detail.dataset.spanId = n ? n.span.span_id : '';
    replace(detail, n ? spanDetail(n.span, () => open(null)) : null);
    mark();
    if (n) detail.scrollIntoView({ block: 'nearest' });
  };
  function draw(sessions, calls) {
    replace(toggle, otherToggle(calls.filter(isOther).length, onToggle));
    for (const session of sessions) {
      session.spans = session.spans || [];
      session.kids = forest(session.calls, spanNodesOf(session.spans));
    }
    const withSpans = sessions.some((se) => se.spans.length);
    replace(legendBox, legend(withSpans));
    links = new Map();
    replace(tree, runTree(runId, sessions, links, open));
    replace(waterfallBox, waterfall(runId, sessions, links, waterfallBox.clientWidth, open));
    // An open pane follows the span's latest copy, or closes with it.
    if (selected) {
      const still = sessions.flatMap((se) => spanNodesOf(se.spans)).find((n) => n.key === selected);
      if (still) { replace(detail, spanDetail(still.span, () => open(null))); mark(); } else open(null);
    }
  }
  return { el, detail, draw };
}

// A session's steps and harness span nodes as a forest. A span hangs under
// its parent span; a step under the harness span its `traceparent` named
// (the span lists it in `calls`), else under the step its parent id names
// (the trace id or span id of any of its attempts). Siblings are in start
// order (steps among themselves keep their order).
function forest(steps, spanNodes) {
  const spans = spanNodes || [];
  const byId = new Map();
  for (const step of steps) {
    for (const a of step.attempts) {
      byId.set(a.trace_id, step);
      if (a.span_id) byId.set(a.span_id, step);
    }
  }
  const spanByKey = new Map(spans.map((n) => [n.key, n]));
  const spanOfCall = new Map();
  for (const n of spans) for (const id of n.span.calls || []) spanOfCall.set(id, n);
  const parentOf = (n) => {
    if (n.isSpan) return n.span.parent_span_id ? spanByKey.get(spanKey(n.span.trace_id, n.span.parent_span_id)) : undefined;
    const under = n.attempts.map((a) => spanOfCall.get(a.trace_id)).find(Boolean);
    return under || (n.parent_span_id ? byId.get(n.parent_span_id) : undefined);
  };
  const nodes = spans.length ? inStartOrder([...steps, ...spans]) : steps;
  const children = new Map(nodes.map((n) => [keyOf(n), []]));
  const roots = [];
  for (const n of nodes) {
    const parent = parentOf(n);
    if (parent && parent !== n) children.get(keyOf(parent)).push(n);
    else roots.push(n);
  }
  // Parent links that form a cycle leave nodes unreachable: show them as roots.
  const seen = new Set();
  const visit = (n) => { if (!seen.has(keyOf(n))) { seen.add(keyOf(n)); children.get(keyOf(n)).forEach(visit); } };
  roots.forEach(visit);
  for (const n of nodes) if (!seen.has(keyOf(n))) { roots.push(n); visit(n); }
  return { roots, children };
}

// The forest's nodes depth first (the waterfall's rows), each with how
// many harness spans enclose it (its label's indent).
function depthFirst(kids) {
  const rows = [];
  const walk = (n, indent) => {
    rows.push({ node: n, indent });
    for (const child of kids.children.get(keyOf(n))) walk(child, indent + (n.isSpan ? 1 : 0));
  };
  kids.roots.forEach((n) => walk(n, 0));
  return rows;
}

// A step's node in the tree: its last attempt's outcome, and a link to it.
function stepNode(c) {
  const retried = c.attempts.length > 1;
  return h('a', { class: `node ${statusClass(c.status)}`, href: callHref(c.trace_id), title: `${c.trace_id}\n${answerLine(c)}` },
    h('span', { class: 'step' }, stepLabel(c)),
    isOther(c) ? h('span', { class: 'tag other' }, 'other') : null,
    h('span', { class: 'op' }, isOther(c) ? `${c.method} ${c.path}` : `${c.operation} ${c.model || ''}`),
    c.stream ? h('span', { class: 'tag' }, 'stream') : null,
    retried ? h('span', { class: 'tag retried' }, `${c.attempts.length} attempts`) : null,
    statusBadge(c.status, c.http_status),
    h('span', { class: 'num' }, fmtMs(c.latency_ms)),
    h('span', { class: 'preview' }, answerLine(c)));
}

// The attempts of a retried step, first to last, each linking to its call.
function attemptList(attempts) {
  return h('ul', { class: 'attempts' }, attempts.map((a) => h('li', { class: 'attempt', data: { traceId: a.trace_id, status: a.status, attempt: a.attempt } },
    h('a', { class: `node ${statusClass(a.status)}`, href: callHref(a.trace_id), title: a.trace_id },
      h('span', { class: 'muted' }, `attempt ${a.attempt}`),
      statusBadge(a.status, a.http_status),
      h('span', { class: 'num' }, fmtMs(a.latency_ms)),
      h('span', { class: 'preview' }, answerLine(a))))));
}

function runTree(runId, sessions, links, onSpan) {
  if (!sessions.length) return h('p', { class: 'empty' }, 'No sessions in this run yet.');
  const node = (c, kids, depth) => {
    const item = c.isSpan ? spanItem(c, onSpan) : h('li', { class: isOther(c) ? 'call other' : 'call', data: { traceId: c.trace_id, step: c.step_id ?? '', parent: c.parent_span_id || '', session: c.session_id || '', status: c.status, operation: c.operation, attempts: c.attempts.length } },
      stepNode(c),
      c.attempts.length > 1 ? attemptList(c.attempts) : null);
    hoverLink(links, keyOf(c), item.firstChild);
    const grandchildren = kids.children.get(keyOf(c));
    // Agents chain every step to the previous one: past a few levels, stop
    // indenting so that long sessions stay readable.
    const flat = depth > 6 ? 'flat' : depth === 6 ? 'flat first' : null;
    if (grandchildren.length) item.append(h('ul', { class: flat }, grandchildren.map((g) => node(g, kids, depth + 1))));
    return item;
  };
  return h('ul', { class: 'tree', data: { run: runId || '' } }, sessions.map((session) => {
    const kids = session.kids;
    const info = session.info;
    const spans = session.spans.length;
    const errors = info ? info.error_count : session.all.filter((c) => c.status !== 'ok').length;
    const label = `session ${shortSession(session.id, runId)}`;
    return h('li', { class: 'session', data: { session: session.id || '' } },
      h('div', { class: 'node session-node', title: session.id || '' },
        h('span', { class: 'sid' }, session.id ? h('a', { href: sessionHref(session.id) }, label) : label),
        h('span', { class: 'muted' }, plural(info ? info.trace_count : session.all.length, 'call')),
        errors ? h('span', { class: 'badge error' }, plural(errors, 'error')) : null,
        info ? h('span', { class: 'muted' }, `${fmtInt(info.tokens)} tokens`) : null,
        spans ? h('span', { class: 'muted spans-count' }, plural(spans, 'harness span')) : null),
      kids.roots.length ? h('ul', null, kids.roots.map((c) => node(c, kids, 1)))
        : h('p', { class: 'empty' }, 'Only other calls: tick "other calls" to see them.'));
  }));
}

// Highlights a call in the tree and the waterfall together on hover.
function hoverLink(links, traceId, el) {
  if (!links.has(traceId)) links.set(traceId, []);
  links.get(traceId).push(el);
  const set = (on) => links.get(traceId).forEach((x) => x.classList.toggle('hl', on));
  el.addEventListener('mouseenter', () => set(true));
  el.addEventListener('mouseleave', () => set(false));
}

// The waterfall's legend; with harness spans, how each kind is drawn too.
function legend(withSpans) {
  const item = (cls, label) => h('span', { class: 'legend-item' }, h('span', { class: `swatch ${cls}` }), label);
  return h('div', { class: 'legend' }, item('ok', 'ok'), item('error', 'error'), item('closed', 'client closed'), item('retry', 'earlier attempt'), item('ttft', 'first token'),
    withSpans ? [item('agent', 'agent span'), item('tool', 'tool span'), item('generic', 'other span'), item('span-error', 'span with error')] : null);
}

// A step in a 1-2-5 sequence so that `span` has about `count` ticks.
function niceStep(span, count) {
  const raw = span / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * power).find((step) => step >= raw) || raw;
}

// The waterfall: one row per step, grouped by session; a bar from start to
// end of its last attempt (earlier attempts drawn fainter before it), a
// tick at the first response byte, failures in red.
function waterfall(runId, sessions, links, width, onSpan) {
  const attempts = sessions.flatMap((se) => se.calls.flatMap((st) => st.attempts));
  const spans = sessions.flatMap((se) => se.spans);
  if (!attempts.length && !spans.length) return h('p', { class: 'empty' }, 'No calls yet.');
  const W = Math.max(560, width || 900);
  const LABEL = 150;
  const RIGHT = 64;
  const ROW = 22;
  const HEAD = 22;
  const AXIS = 22;
  const starts = [...attempts.map((c) => parseTime(c.started_at)), ...spans.map((sp) => parseTime(sp.start))];
  const ends = [...attempts.map((c) => parseTime(c.started_at) + c.latency_ms), ...spans.map((sp) => parseTime(sp.start) + sp.duration_ms)];
  const t0 = Math.min(...starts);
  const t1 = Math.max(...ends);
  const span = Math.max(t1 - t0, 1);
  const plot = W - LABEL - RIGHT;
  const x = (ms) => LABEL + (ms / span) * plot;
  // Rows: the steps in start order; with harness spans, the tree depth first.
  const rowsOf = (se) => (se.spans.length ? depthFirst(se.kids) : se.calls.map((node) => ({ node, indent: 0 })));
  const rows = new Map(sessions.map((se) => [se, rowsOf(se)]));
  const height = AXIS + sessions.reduce((sum, se) => sum + HEAD + rows.get(se).length * ROW, 0) + 4;
  const root = s('svg', { class: 'waterfall', width: W, height, viewBox: `0 0 ${W} ${height}`, role: 'img', 'aria-label': 'Timeline of the calls' });

  // Time axis and grid.
  const step = niceStep(span, 6);
  for (let t = 0; t <= span + 1e-9; t += step) {
    root.append(s('line', { class: 'grid', x1: x(t), x2: x(t), y1: AXIS - 4, y2: height }),
      s('text', { class: 'axis', x: x(t), y: AXIS - 8, 'text-anchor': 'middle' }, t === 0 ? '0' : fmtMs(t)));
  }

  let y = AXIS;
  for (const session of sessions) {
    root.append(s('g', { class: 'session-row', data: { session: session.id || '' } },
      s('rect', { class: 'band', x: 0, y, width: W, height: HEAD }),
      s('text', { class: 'session-label', x: 6, y: y + 15 }, `session ${shortSession(session.id, runId)}`)));
    y += HEAD;
    for (const { node: c, indent } of rows.get(session)) {
      const at = { t0, x, span, plot, W, RIGHT, ROW, indent };
      const bar = c.isSpan ? spanRow(c, y, at, onSpan) : waterfallRow(c, y, at);
      hoverLink(links, keyOf(c), bar);
      root.append(bar);
      y += ROW;
    }
  }
  return root;
}

// One step's row of the waterfall at height `y`.
function waterfallRow(c, y, { t0, x, span, plot, W, RIGHT, ROW, indent }) {
  const start = parseTime(c.started_at) - t0;
  const bx = x(start);
  const bw = Math.max(2, (c.latency_ms / span) * plot);
  const tries = c.attempts.length;
  const label = `${stepLabel(c)} · ${c.operation}${c.stream ? ' · stream' : ''}${tries > 1 ? ` · ${tries} attempts` : ''}`;
  const tip = `${label} · ${isOther(c) ? `${c.method} ${c.path}` : c.model || ''}\n${c.status}${c.http_status ? ` ${c.http_status}` : ''} · ${fmtMs(c.latency_ms)}`
    + (c.ttft_ms !== null && c.ttft_ms !== undefined ? ` · first byte ${fmtMs(c.ttft_ms)}` : '')
    + `\nstarts at +${fmtMs(start)}\n${answerLine(c)}`;
  const earlier = c.attempts.slice(0, -1).map((a) => {
    const at = parseTime(a.started_at) - t0;
    return s('rect', { class: `retry ${statusClass(a.status)}`, data: { traceId: a.trace_id }, x: x(at), y: y + 7, width: Math.max(2, (a.latency_ms / span) * plot), height: ROW - 14, rx: 2 },
      s('title', null, `attempt ${a.attempt}: ${a.status}${a.http_status ? ` ${a.http_status}` : ''} · ${fmtMs(a.latency_ms)}`));
  });
  return s('g', { class: `bar ${statusClass(c.status)}${isOther(c) ? ' other' : ''}`, data: { traceId: c.trace_id, step: c.step_id ?? '', session: c.session_id || '', status: c.status, operation: c.operation, attempts: tries }, onclick: () => { location.hash = callHref(c.trace_id); } },
    s('title', null, tip),
    s('rect', { class: 'hit', x: 0, y, width: W, height: ROW }),
    s('text', { class: 'row-label', x: 18 + indent * INDENT, y: y + 15 }, label),
    earlier,
    s('rect', { class: 'span', x: bx, y: y + 5, width: bw, height: ROW - 10, rx: 2 }),
    c.ttft_ms !== null && c.ttft_ms !== undefined
      ? s('line', { class: 'ttft', x1: x(start + c.ttft_ms), x2: x(start + c.ttft_ms), y1: y + 2, y2: y + ROW - 2 })
      : null,
    s('text', { class: 'duration', x: Math.min(bx + bw + 4, W - RIGHT + 4), y: y + 15 }, fmtMs(c.latency_ms)));
}

// ---------------------------------------------------------------------------
// A session: its steps as a tree and a waterfall

async function sessionView(view, sessionId, gen) {
  const spansOf = () => request(`ui/api/sessions/${encodeURIComponent(sessionId)}/spans`).then((p) => p.spans);
  const [found, page, firstSpans] = await Promise.all([
    request(`sessions/${encodeURIComponent(sessionId)}`).catch((error) => error),
    request('ui/api/calls', { session_id: sessionId, limit: 5000 }),
    spansOf(),
  ]);
  if (gen !== generation) return;
  // A session only its harness spans name has no calls, and no row.
  if (found instanceof Error && !(found.status === 404 && firstSpans.length)) throw found;
  const info = found instanceof Error ? spanOnlySession(sessionId, firstSpans) : found;
  setCrumbs([...(info.run_id ? [['Runs', '#/'], [info.run_id, runHref(info.run_id)]] : [['Sessions', '#/sessions']]),
    [`session ${shortSession(sessionId, info.run_id)}`]]);
  const calls = new Map(page.calls.map((c) => [c.trace_id, c]));
  const summary = h('div', { class: 'cards' });
  const feedback = h('div', { class: 'feedback' });
  const panels = stepsPanels(info.run_id, () => draw());
  replace(view,
    h('h1', null, h('span', { class: 'muted' }, 'session '), sessionId, ' ', copyButton(sessionId, 'session id')),
    summary,
    page.truncated ? h('p', { class: 'note' }, `Showing the newest ${page.calls.length} calls of this session.`) : null,
    feedback,
    panels.el,
    panels.detail);

  let latest = info;
  let spans = firstSpans;
  function draw() {
    const all = [...calls.values()].sort(byStart);
    const sessions = sessionOrder([latest], all);
    // The one session listed is this one: its harness spans join it.
    sessions[0].spans = spans;
    replace(summary, sessionCards(latest, all, sessions));
    replace(feedback, feedbackTable(latest.feedback));
    panels.draw(sessions, all);
  }
  draw();
  const redraw = throttle(async () => {
    const [fresh, freshSpans] = await Promise.all([
      request(`sessions/${encodeURIComponent(sessionId)}`).catch(() => null),
      spansOf().catch(reportError),
    ]);
    if (gen !== generation) return;
    if (fresh) latest = fresh;
    if (freshSpans) spans = freshSpans;
    draw();
  }, 1000);
  // Spans arrive when they end, often after their calls: every few polls,
  // ask again, and redraw only when something changed.
  const signature = (list) => list.map((sp) => `${sp.span_id}/${sp.end}/${sp.calls.length}`).join(',');
  const recheck = throttle(async () => {
    const fresh = await spansOf().catch(reportError);
    if (gen !== generation || !fresh || signature(fresh) === signature(spans)) return;
    spans = fresh;
    draw();
  }, 5000);
  current = {
    onResize: draw,
    onPoll: recheck,
    onCalls(fresh) {
      const mine = fresh.filter((c) => c.session_id === sessionId);
      if (!mine.length) return;
      for (const c of mine) calls.set(c.trace_id, c);
      redraw();
    },
  };
}

// What the page shows of a session that only harness spans name: no calls,
// the run its spans name.
function spanOnlySession(sessionId, spans) {
  const run = spans.map((sp) => sp.identity && sp.identity.run_id).find(Boolean) || null;
  return { session_id: sessionId, run_id: run, trace_count: 0, error_count: 0, tokens: 0, first_seen: spans[0].start, feedback: [] };
}

function sessionCards(info, calls, sessions) {
  const spans = sessions.flatMap((se) => se.spans || []);
  const tools = spans.filter((sp) => spanKind(sp) === 'tool').length;
  return [
    card('run', info.run_id ? h('a', { href: runHref(info.run_id) }, info.run_id) : 'none', 'run'),
    card('calls', fmtInt(info.trace_count)),
    card('errors', fmtInt(info.error_count), info.error_count ? 'bad' : ''),
    card('tokens', fmtInt(info.tokens)),
    info.cost_usd != null ? card('cost', fmtUsd(info.cost_usd)) : null,
    card('started', info.first_seen ? fmtWhen(info.first_seen) : fmtWhen(info.created_at)),
    stepCards(calls, sessions),
    spans.length ? card('harness spans', fmtInt(spans.length), 'spans') : null,
    tools ? card('tool spans', fmtInt(tools), 'tools') : null,
  ];
}

// ---------------------------------------------------------------------------
// Charts (hand-drawn SVG)

const PALETTE = ['#2563eb', '#059669', '#7c3aed', '#ea580c', '#0891b2', '#ca8a04', '#db2777', '#4b5563'];

// Latency and TTFT distributions, tokens and errors over time, per model;
// `params()` narrows them (to a run, a time range); calls without a model
// count only when "other calls" is ticked.
function chartsPanel(params) {
  const el = h('div', { class: 'charts' }, h('p', { class: 'muted' }, 'Loading…'));
  const turn = newestOnly();
  async function refresh() {
    const newest = turn();
    let stats;
    try {
      stats = await request('ui/api/stats', { ...params(), other: prefs.showOther ? 1 : '' });
    } catch (error) {
      if (newest()) replace(el, h('p', { class: 'empty' }, `Charts unavailable: ${error.message}`));
      return;
    }
    if (!el.isConnected || !newest()) return;
    if (!stats.calls) {
      replace(el, h('p', { class: 'empty' }, prefs.range !== 'all' ? 'No calls to chart in this time range.' : 'No calls to chart yet.'));
      return;
    }
    const color = new Map(stats.models.map((m, i) => [m, PALETTE[i % PALETTE.length]]));
    const grid = h('div', { class: 'chart-grid' });
    replace(el, modelLegend(stats.models, color), grid, modelTable(stats, color));
    const width = Math.max(300, Math.floor((grid.clientWidth - 16) / 2));
    const hist = (histogram) => ({
      labels: histogram.edges.slice(0, -1).map((lo, i) => fmtRange(lo, histogram.edges[i + 1])),
      ticks: histogram.edges.slice(0, -1).map((lo, i) => fmtRange(lo, histogram.edges[i + 1])),
      series: stats.models.filter((m) => histogram.counts[m]).map((m) => ({ name: m, color: color.get(m), values: histogram.counts[m] })),
    });
    const time = stats.over_time;
    const n = Math.max(0, ...Object.values(time.series).map((series) => series.calls.length));
    const times = Array.from({ length: n }, (_, i) => (time.start + i * time.bucket_seconds) * 1000);
    const precise = time.bucket_seconds < 1;
    const over = (pick) => ({
      labels: times.map((t) => `from ${fmtClock(t, precise)} (${fmtMs(time.bucket_seconds * 1000)})`),
      ticks: times.map((t) => fmtClock(t, precise)),
      series: stats.models.map((m) => ({ name: m, color: color.get(m), values: time.series[m] ? pick(time.series[m]) : [] })),
    });
    const calls = times.map((_, i) => Object.values(time.series).reduce((sum, series) => sum + series.calls[i], 0));
    grid.append(
      chart('Latency distribution', 'calls', width, hist(stats.latency_ms)),
      chart('Time to first token (streamed calls)', 'calls', width, hist(stats.ttft_ms)),
      chart('Tokens over time', 'tokens', width, over((series) => series.input_tokens.map((v, i) => v + series.output_tokens[i]))),
      chart('Errors over time (grey: all calls)', 'calls', width, { ...over((series) => series.errors), ghost: calls }));
  }
  return { el, refresh };
}

// A histogram bin's range, e.g. "2–5 ms", "500 ms–1 s"; the server's last
// bin (ending at 200 s) also holds everything slower.
function fmtRange(lo, hi) {
  if (hi >= 200000) return `≥ ${fmtMs(lo)}`;
  const unit = (ms) => (ms >= 1000 ? [ms / 1000, 's'] : [ms, 'ms']);
  const [a, aUnit] = unit(lo);
  const [b, bUnit] = unit(hi);
  return aUnit === bUnit ? `${a}–${b} ${bUnit}` : `${a} ${aUnit}–${b} ${bUnit}`;
}

function modelLegend(models, color) {
  return h('div', { class: 'legend models' }, models.map((m) => h('span', { class: 'legend-item' }, swatch(color.get(m)), m)));
}

// A colour chip; SVG so that its colour is an attribute, not an inline style.
function swatch(fill) {
  return s('svg', { class: 'chip', width: 10, height: 10, viewBox: '0 0 10 10' }, s('rect', { width: 10, height: 10, rx: 2, fill }));
}

function modelTable(stats, color) {
  const q = (percentiles) => (percentiles ? `${fmtMs(percentiles.p50)} / ${fmtMs(percentiles.p95)} / ${fmtMs(percentiles.p99)}` : '–');
  return h('table', { class: 'models' },
    thead('Model', '#Calls', '#Errors', '#Latency p50 / p95 / p99', '#TTFT p50 / p95 / p99', '#Tokens in', '#Tokens out'),
    h('tbody', null, stats.per_model.map((m) => h('tr', null,
      h('td', null, swatch(color.get(m.model)), ' ', m.model),
      h('td', { class: 'num' }, fmtInt(m.calls)),
      h('td', { class: 'num' }, m.errors ? h('span', { class: 'badge error' }, fmtInt(m.errors)) : '0'),
      h('td', { class: 'num' }, q(m.latency_ms)),
      h('td', { class: 'num' }, q(m.ttft_ms)),
      h('td', { class: 'num' }, fmtInt(m.input_tokens)),
      h('td', { class: 'num' }, fmtInt(m.output_tokens))))),
    stats.sampled ? h('caption', null, `The newest ${fmtInt(stats.calls)} calls.`) : null);
}

// A stacked bar chart: `series` stack per bar; `ghost` (optional) is drawn
// behind them in grey; `labels` are the tooltips, `ticks` the axis text.
function chart(title, unit, width, { labels, ticks, series, ghost }) {
  const W = width;
  const H = 190;
  const M = { left: 46, right: 8, top: 10, bottom: 26 };
  const plotW = W - M.left - M.right;
  const plotH = H - M.top - M.bottom;
  const n = labels.length;
  const svg = s('svg', { class: 'chart', width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title });
  const figure = h('figure', { class: 'chart-box' }, h('figcaption', null, title), svg);
  const totals = labels.map((_, i) => series.reduce((sum, se) => sum + (se.values[i] || 0), 0));
  const top = Math.max(1, ...totals, ...(ghost || []));
  if (!n || !Math.max(0, ...totals, ...(ghost || []))) {
    svg.append(s('text', { class: 'axis', x: W / 2, y: H / 2, 'text-anchor': 'middle' }, 'no data'));
    return figure;
  }
  const step = Math.max(1, niceStep(top, 4));
  const yMax = Math.ceil(top / step) * step;
  const y = (v) => M.top + plotH - (v / yMax) * plotH;
  for (let v = 0; v <= yMax + 1e-9; v += step) {
    svg.append(s('line', { class: 'grid', x1: M.left, x2: W - M.right, y1: y(v), y2: y(v) }),
      s('text', { class: 'axis', x: M.left - 6, y: y(v) + 4, 'text-anchor': 'end' }, fmtInt(Math.round(v))));
  }
  const band = plotW / n;
  const bw = Math.max(1, Math.min(band * 0.78, 56));
  const every = Math.ceil(n / Math.max(1, Math.floor(plotW / 70)));
  for (let i = 0; i < n; i++) {
    const bx = M.left + i * band + (band - bw) / 2;
    if (ghost && ghost[i]) {
      svg.append(s('rect', { class: 'ghost', x: bx, y: y(ghost[i]), width: bw, height: y(0) - y(ghost[i]) }, s('title', null, `${labels[i]}: ${fmtInt(ghost[i])} calls in all`)));
    }
    let base = 0;
    for (const se of series) {
      const v = se.values[i] || 0;
      if (!v) continue;
      svg.append(s('rect', { x: bx, y: y(base + v), width: bw, height: y(base) - y(base + v), fill: se.color }, s('title', null, `${labels[i]}\n${se.name}: ${fmtInt(v)} ${unit}`)));
      base += v;
    }
    if (i % every === 0) svg.append(s('text', { class: 'axis', x: bx + bw / 2, y: H - 8, 'text-anchor': 'middle' }, ticks[i]));
  }
  svg.append(s('line', { class: 'baseline', x1: M.left, x2: W - M.right, y1: y(0), y2: y(0) }));
  return figure;
}

// ---------------------------------------------------------------------------
// One call

async function callView(view, traceId, gen) {
  const t = await request(`traces/${encodeURIComponent(traceId)}`);
  if (gen !== generation) return;
  const step = stepLabel(t);
  setCrumbs([t.run_id || !t.session_id ? ['Runs', '#/'] : ['Sessions', '#/sessions'],
    t.run_id ? [t.run_id, runHref(t.run_id)] : null,
    t.session_id ? [shortSession(t.session_id, t.run_id), sessionHref(t.session_id)] : null,
    [step]].filter(Boolean));
  const choices = answerChoices(t);
  const nav = h('nav', { class: 'step-nav', 'aria-label': 'Steps of the session', data: { traceId: t.trace_id } });
  const what = isOther(t)
    ? [h('span', { class: 'tag other' }, 'other'), ' ', h('span', { class: 'model' }, `${t.method} ${t.path}`)]
    : [`${t.operation} `, h('span', { class: 'model' }, t.model || '')];
  replace(view,
    h('h1', null, `${step} · `, what, ' ', statusBadge(t.status, t.http_status)),
    t.session_id ? nav : null,
    facts(t),
    t.error ? h('div', { class: 'panel failure' }, h('h2', null, `Error: ${t.error.kind || 'error'}`), h('p', null, t.error.message || '')) : null,
    section('Messages', `${(t.messages || []).length}`, h('div', { class: 'messages' }, (t.messages || []).map((m) => messageCard(m)))),
    section('Answer', choices.length > 1 ? `${choices.length} choices` : '', h('div', { class: 'answer' }, choices.length
      ? choices.map((c, i) => choiceCard(c, i, choices.length))
      : h('p', { class: 'empty' }, 'No answer was recorded.'))),
    t.tools && t.tools.length ? section('Tools offered', `${t.tools.length}`, h('div', null, t.tools.map(toolDefinition)), true) : null,
    section('Usage', '', usageTable(t)),
    tokenSection(t, choices),
    Object.keys(t.request_params || {}).length ? section('Request parameters', '', kvTable(t.request_params), true) : null,
    section('Raw request and response', '', h('div', null,
      rawBlock('Request headers', t.request_headers, true),
      rawBlock(`Request body · ${t.method || ''} ${t.path || ''}`, t.raw_request),
      rawBlock('Response headers', t.response_headers, true),
      rawBlock('Response body', t.raw_response)), true));
  if (t.session_id) await stepNav(nav, t, gen).catch((error) => replace(nav, h('span', { class: 'muted' }, `Steps unavailable: ${error.message}`)));
}

// The previous and next step of the call's session (retries folded into
// their step; calls without a model only when shown, or when this is one),
// and the attempts of this call's step.
async function stepNav(nav, t, gen) {
  const page = await request('ui/api/calls', { session_id: t.session_id, limit: 5000 });
  if (gen !== generation) return;
  const mine = (st) => st.attempts.some((a) => a.trace_id === t.trace_id);
  const steps = stepsOf(page.calls, (st) => shown(st) || mine(st));
  const i = steps.findIndex(mine);
  if (i < 0) {
    replace(nav, h('span', { class: 'muted' }, 'This call is not among the newest calls of its session.'));
    return;
  }
  const here = steps[i];
  const link = (st, cls, text) => (st
    ? h('a', { class: cls, href: callHref(st.trace_id), title: `${stepLabel(st)} · ${opLabel(st)}`, rel: cls }, text)
    : h('span', { class: `${cls} disabled` }, text));
  const attempts = here.attempts.length > 1
    ? h('span', { class: 'attempts-nav' }, `attempt ${here.attempts.findIndex((a) => a.trace_id === t.trace_id) + 1} of ${here.attempts.length}:`,
      here.attempts.map((a) => (a.trace_id === t.trace_id
        ? h('span', { class: 'attempt current', data: { traceId: a.trace_id } }, ` ${a.attempt} `, statusBadge(a.status, a.http_status))
        : h('a', { class: 'attempt', href: callHref(a.trace_id), data: { traceId: a.trace_id } }, ` ${a.attempt} `, statusBadge(a.status, a.http_status)))))
    : null;
  replace(nav,
    link(steps[i - 1], 'prev', '← previous step'),
    h('span', { class: 'position' }, `${stepLabel(here)} · ${i + 1} of ${steps.length} in `,
      h('a', { href: sessionHref(t.session_id) }, `session ${shortSession(t.session_id, t.run_id)}`)),
    attempts,
    link(steps[i + 1], 'next', 'next step →'));
}

// Feedback (POST /feedback): a session's items, a run's summary per name.
function feedbackTable(items) {
  if (!items || !items.length) return null;
  return section('Feedback', items.length, h('table', { class: 'feedback-items' },
    thead('Name', '#Value', 'On', 'When', 'Comment'),
    h('tbody', null, items.map((f) => h('tr', null,
      h('td', null, f.name),
      h('td', { class: 'num' }, typeof f.value === 'number' ? String(Number(f.value.toPrecision(6))) : String(f.value)),
      h('td', null, f.target_kind === 'trace'
        ? h('a', { href: callHref(f.target_id) }, `call ${f.target_id.slice(-8)}`)
        : f.target_kind),
      h('td', null, fmtWhen(f.created_at)),
      h('td', null, f.comment || ''))))));
}

function feedbackSummary(summary) {
  if (!summary || !summary.length) return null;
  const num = (v) => (v === null || v === undefined ? '–' : String(Number(v.toPrecision(4))));
  return section('Feedback', summary.length, h('table', { class: 'feedback-summary' },
    thead('Name', '#Count', '#Mean', '#Min', '#Max'),
    h('tbody', null, summary.map((f) => h('tr', null,
      h('td', null, f.name),
      h('td', { class: 'num' }, fmtInt(f.count)),
      h('td', { class: 'num' }, num(f.mean)),
      h('td', { class: 'num' }, num(f.min)),
      h('td', { class: 'num' }, num(f.max)))))));
}

function section(title, count, body, collapsed) {
  const head = [h('span', null, title), count ? h('span', { class: 'count' }, count) : null];
  if (collapsed) return h('details', { class: 'panel' }, h('summary', null, h('h2', null, head)), body);
  return h('section', { class: 'panel' }, h('h2', null, head), body);
}

function facts(t) {
  const row = (label, value) => (value === null || value === undefined || value === '' ? null : [h('dt', null, label), h('dd', null, value)]);
  const u = t.usage || {};
  const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
  const parent = t.parent_span_id ? (uuid.test(t.parent_span_id) ? h('a', { href: callHref(t.parent_span_id), class: 'id' }, t.parent_span_id) : h('span', { class: 'id' }, t.parent_span_id)) : null;
  const answered = t.response_model && t.response_model !== t.model ? ` → ${t.response_model}` : '';
  return h('dl', { class: 'facts panel' },
    row('Status', [statusBadge(t.status, null), t.http_status ? ` HTTP ${t.http_status}` : '']),
    row('Model', (t.model || '–') + answered),
    row('API', `${t.protocol} · ${t.operation}${t.stream ? ' · streamed' : ''}`),
    row('Started', fmtWhen(t.started_at)),
    row('Latency', fmtMs(t.latency_ms)),
    row('First byte', t.ttft_ms !== null && t.ttft_ms !== undefined ? fmtMs(t.ttft_ms) : null),
    row('Tokens', `in ${fmtInt(u.input_tokens)} · out ${fmtInt(u.output_tokens)}`),
    row('Cost', fmtUsd(t.cost_usd)),
    row('Finish', (t.finish_reasons || []).join(', ') || t.finish_reason),
    row('Run', t.run_id ? idWithCopy(t.run_id, 'run id', runHref(t.run_id)) : null),
    row('Session', t.session_id ? idWithCopy(t.session_id, 'session id', sessionHref(t.session_id)) : null),
    row('Step', t.step_id),
    row('Parent', parent),
    row('Within', t.harness_span ? [kindTag(spanKind(t.harness_span)), ' ', t.harness_span.name, ' ', h('span', { class: 'id muted' }, `span ${t.harness_span.span_id}`)] : null),
    row('Harness', t.harness),
    row('Project', [t.project, t.experiment].filter(Boolean).join(' · ')),
    row('Upstream', [t.route, t.upstream].filter(Boolean).join(' · ')),
    row('Trace id', idWithCopy(t.trace_id, 'trace id')),
    row('Span id', t.span_id ? idWithCopy(t.span_id, 'span id') : null),
    row('Identity errors', (t.identity_errors || []).join('; ')));
}

// The choices of the answer; older records may only have response_message.
function answerChoices(t) {
  if (Array.isArray(t.choices) && t.choices.length) return t.choices;
  if (t.response_message && Object.keys(t.response_message).length) return [{ index: 0, message: t.response_message, finish_reason: t.finish_reason }];
  return [];
}

function messageCard(m, extra) {
  const role = (m && m.role) || 'message';
  const head = h('div', { class: 'msg-head' }, h('span', { class: 'role' }, role),
    m.name ? ` ${m.name}` : null,
    m.tool_call_id ? h('span', { class: 'muted' }, ` answers ${m.tool_call_id}`) : null,
    extra);
  const reasoning = m.reasoning_content || m.reasoning;
  return h('div', { class: `msg role-${String(role).replace(/[^a-z_]/gi, '')}` }, head,
    reasoning ? h('div', { class: 'reasoning' }, h('div', { class: 'label' }, 'reasoning'), contentBlock(reasoning)) : null,
    contentBlock(m.content),
    m.refusal ? h('div', { class: 'refusal' }, 'refusal: ', m.refusal) : null,
    (m.tool_calls || []).map(toolCall));
}

// Message content: a string, a list of parts (text or anything else), or
// some other JSON value.
function contentBlock(content) {
  if (content === null || content === undefined || content === '') return null;
  if (typeof content === 'string') return h('div', { class: 'text' }, content);
  if (Array.isArray(content)) {
    return content.map((part) => (part && typeof part.text === 'string' && (!part.type || part.type === 'text' || part.type === 'input_text' || part.type === 'output_text')
      ? h('div', { class: 'text' }, part.text)
      : h('pre', { class: 'json' }, pretty(part))));
  }
  return h('pre', { class: 'json' }, pretty(content));
}

function toolCall(call) {
  const fn = (call && call.function) || {};
  const name = fn.name || call.name || '?';
  const args = fn.arguments !== undefined ? fn.arguments : call.input !== undefined ? call.input : call.arguments;
  return h('div', { class: 'toolcall' },
    h('div', null, h('span', { class: 'label' }, 'tool call '), h('span', { class: 'fn' }, name), call.id ? h('span', { class: 'muted' }, `  ${call.id}`) : null),
    args !== undefined ? h('pre', { class: 'json' }, pretty(args)) : null);
}

function toolDefinition(tool) {
  const fn = tool.function || tool;
  return h('div', { class: 'tool' }, h('span', { class: 'fn' }, fn.name || '?'), fn.description ? h('span', { class: 'muted' }, ` — ${fn.description}`) : null,
    h('pre', { class: 'json' }, pretty(fn.parameters || fn.input_schema || tool)));
}

function choiceCard(choice, i, count) {
  const extra = [count > 1 ? h('span', { class: 'muted' }, ` choice ${choice.index ?? i}`) : null,
    choice.finish_reason ? h('span', { class: 'muted' }, ` · finish: ${choice.finish_reason}`) : null];
  return messageCard(choice.message || {}, extra);
}

function kvTable(object) {
  return h('table', { class: 'kv' }, h('tbody', null, Object.entries(object || {}).map(([k, v]) =>
    h('tr', null, h('th', null, k), h('td', null, typeof v === 'object' && v !== null ? h('pre', { class: 'json' }, pretty(v)) : String(v))))));
}

function usageTable(t) {
  const usage = Object.fromEntries(Object.entries(t.usage || {}).filter(([, v]) => v !== null && v !== undefined));
  if (!Object.keys(usage).length) return h('p', { class: 'empty' }, 'The upstream reported no usage.');
  return h('div', { class: 'usage' }, kvTable(usage));
}

// Token ids and logprobs of choice `i`: from the record's per-choice
// `token_ids`, `logprobs` and `top_logprobs`, else its first-choice
// `completion_token_ids` and `logprobs`, else the raw (non-streamed) answer,
// which also gives each token's text and alternatives when the record does
// not. Logprobs may be numbers, OpenAI entries {token, logprob,
// top_logprobs}, or {content: [entries]}.
function tokenRows(t, choice, i) {
  const some = (v) => (Array.isArray(v) ? v.length > 0 : v !== undefined && v !== null);
  const pick = (...values) => values.find(some);
  const entries = (v) => (v && !Array.isArray(v) && Array.isArray(v.content) ? v.content : Array.isArray(v) ? v : []);
  const index = choice.index ?? i;
  const rawChoices = t.raw_response && Array.isArray(t.raw_response.choices) ? t.raw_response.choices : [];
  const raw = rawChoices.find((c) => c && (c.index ?? 0) === index) || {};
  const ids = pick(choice.token_ids, index === 0 ? t.completion_token_ids : undefined, raw.token_ids) || [];
  const lps = entries(pick(choice.logprobs, index === 0 ? t.logprobs : undefined, raw.logprobs));
  const detail = entries(raw.logprobs);
  const tops = Array.isArray(choice.top_logprobs) ? choice.top_logprobs : [];
  const rows = [];
  for (let k = 0; k < Math.max(ids.length, lps.length); k++) {
    const entry = lps[k];
    const object = entry && typeof entry === 'object' ? entry : detail[k] && typeof detail[k] === 'object' ? detail[k] : {};
    const logprob = typeof entry === 'number' ? entry : typeof object.logprob === 'number' ? object.logprob : null;
    let top = object.top_logprobs || tops[k] || [];
    if (!Array.isArray(top)) top = Object.entries(top).map(([token, lp]) => ({ token, logprob: lp })); // {token: logprob} form
    rows.push({ id: ids[k], token: object.token, logprob, top });
  }
  return rows;
}

function tokenSection(t, choices) {
  const tables = (choices.length ? choices : [{}]).map((choice, i) => {
    const rows = tokenRows(t, choice, i);
    return rows.length ? h('div', null, choices.length > 1 ? h('h3', null, `choice ${choice.index ?? i}`) : null, tokenTable(rows)) : null;
  }).filter(Boolean);
  const prompt = t.prompt_token_ids || [];
  if (!tables.length && !prompt.length) return null;
  return section('Tokens and logprobs', '', h('div', null,
    prompt.length ? h('details', { class: 'prompt-ids' }, h('summary', null, `prompt: ${fmtInt(prompt.length)} token ids`), h('pre', { class: 'ids' }, prompt.join(' '))) : null,
    tables));
}

const TOKEN_ROWS_SHOWN = 200;

function tokenTable(rows) {
  const body = h('tbody');
  const table = h('table', { class: 'tokens' },
    thead('##', '#token id', 'token', '#logprob', 'p', 'alternatives'), body);
  const renderRows = (limit) => replace(body, rows.slice(0, limit).map((r, k) => {
    const p = r.logprob === null ? null : Math.exp(r.logprob);
    return h('tr', null,
      h('td', { class: 'num muted' }, k),
      h('td', { class: 'num' }, r.id ?? '–'),
      h('td', { class: 'tok' }, r.token === undefined ? '' : JSON.stringify(r.token)),
      h('td', { class: 'num' }, r.logprob === null ? '–' : r.logprob.toFixed(4)),
      h('td', null, p === null ? '' : probBar(p)),
      h('td', { class: 'alts' }, r.top.filter((a) => a && a.token !== r.token).slice(0, 4)
        .map((a) => `${JSON.stringify(a.token)} ${typeof a.logprob === 'number' ? a.logprob.toFixed(2) : ''}`).join('   ')));
  }));
  renderRows(TOKEN_ROWS_SHOWN);
  if (rows.length <= TOKEN_ROWS_SHOWN) return table;
  const more = h('button', { type: 'button', onclick: () => { renderRows(rows.length); more.remove(); } }, `Show all ${fmtInt(rows.length)} tokens`);
  return h('div', null, table, more);
}

function probBar(p) {
  return s('svg', { class: 'prob', width: 60, height: 10, viewBox: '0 0 60 10' },
    s('title', null, `p = ${p.toFixed(4)}`),
    s('rect', { class: 'track', width: 60, height: 10, rx: 2 }),
    s('rect', { class: p >= 0.5 ? 'fill high' : p >= 0.1 ? 'fill mid' : 'fill low', width: Math.max(1, p * 60), height: 10, rx: 2 }));
}

// Credentials are redacted when a record is stored; the UI masks these
// headers again in case a record came from elsewhere.
const SECRET_HEADERS = /^(authorization|proxy-authorization|x-api-key|api-key|cookie|set-cookie)$/i;
const RAW_SHOWN = 200000;

function rawBlock(title, value, headers) {
  let text;
  let note = '';
  if (value === null || value === undefined) {
    text = '(none)';
  } else if (headers) {
    text = Object.entries(value).map(([k, v]) => `${k}: ${SECRET_HEADERS.test(k) ? '[REDACTED]' : Array.isArray(v) ? v.join(', ') : v}`).join('\n') || '(none)';
  } else if (typeof value === 'object' && typeof value.body === 'string' && 'encoding' in value) {
    // A body that was not a JSON object (an SSE stream, text, or bytes).
    note = `${value.content_type || 'unknown type'} · ${value.encoding}`;
    text = value.body;
  } else {
    text = pretty(value);
  }
  const pre = h('pre', { class: 'raw' }, text.length > RAW_SHOWN ? text.slice(0, RAW_SHOWN) : text);
  const more = text.length > RAW_SHOWN
    ? h('button', { type: 'button', onclick: () => { pre.textContent = text; more.remove(); } }, `Show all ${fmtInt(text.length)} characters`)
    : null;
  return h('div', { class: 'raw-block' }, h('h3', null, title, note ? h('span', { class: 'muted' }, ` · ${note}`) : null), pre, more);
}

// ---------------------------------------------------------------------------
// Start

$('#live').addEventListener('click', () => {
  live.paused = !live.paused;
  setLive('on', 'New calls appear as they are recorded. Click to pause.');
});
window.addEventListener('hashchange', route);
window.addEventListener('resize', throttle(() => { if (current && current.onResize) current.onResize(); }, 200));
route();
poll();

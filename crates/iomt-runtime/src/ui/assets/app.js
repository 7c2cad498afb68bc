// The mapping debugger page. Plain browser JavaScript, no framework, no build step, no
// network beyond the page's own origin: it is embedded in the iomt binary and must work offline.
//
// What must hold:
// * Every text from mappings, messages or reports reaches the DOM through textContent or
//   escape(), never as HTML (the page shows user data; the CSP forbids inline script anyway).
// * The API key lives in sessionStorage only (this tab), and is sent as `Authorization: Bearer`.
// * Only the newest run's results are shown: a slow, older response never overwrites a newer one.
'use strict';

const KEY_STORAGE = 'iomt-debugger-api-key';
const DEBOUNCE_MS = 350;
const HIGHLIGHT_LIMIT = 200000; // characters; larger texts are shown without colours
const FIRST_MESSAGES = 100; // message cards shown besides those with problems
const MESSAGE_CARD_LIMIT = 300; // message cards shown at most
const PLAIN_LINES = 5000; // longer texts are shown as plain text, without per-line nodes
const COLORS = ['#2456c8', '#c62828', '#2e7d32', '#8e24aa', '#ef6c00', '#00838f', '#6d4c41', '#455a64'];

const $ = (id) => document.getElementById(id);

function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// ---------------------------------------------------------------------------------------------
// JSON highlighting: a tokenizer tolerant of broken input (the user is typing).

const TOKEN = /("(?:[^"\\\n]|\\.)*"?)(\s*:)?|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)|\b(true|false|null)\b|([{}[\],:])|(\s+)|(.)/g;

function highlightLine(line) {
  if (line.length > 4000) return escape(line);
  let out = '';
  TOKEN.lastIndex = 0;
  let m;
  while ((m = TOKEN.exec(line)) !== null) {
    if (m[1] !== undefined) {
      const cls = m[2] !== undefined ? 't-key' : 't-str';
      const closed = m[1].length > 1 && m[1].endsWith('"');
      out += `<span class="${closed ? cls : 't-bad'}">${escape(m[1])}</span>`;
      if (m[2] !== undefined) out += `<span class="t-punct">${escape(m[2])}</span>`;
    } else if (m[3] !== undefined) out += `<span class="t-num">${m[3]}</span>`;
    else if (m[4] !== undefined) out += `<span class="t-lit">${m[4]}</span>`;
    else if (m[5] !== undefined) out += `<span class="t-punct">${escape(m[5])}</span>`;
    else if (m[6] !== undefined) out += m[6];
    else out += `<span class="t-bad">${escape(m[7])}</span>`;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Editor: a transparent textarea over a highlighted pre, with a gutter of line numbers where
// problems are marked. The textarea keeps native editing (undo, selection, IME).

class Editor {
  constructor(container, onChange) {
    this.name = container.dataset.name;
    this.marks = new Map(); // line -> {level, messages[]}
    this.gutter = el('div', { class: 'gutter' });
    this.gutterInner = el('div', { class: 'gutter-inner' });
    this.gutter.append(this.gutterInner);
    this.pre = el('pre', { 'aria-hidden': 'true' });
    this.textarea = el('textarea', {
      spellcheck: 'false', wrap: 'off', autocapitalize: 'off', autocomplete: 'off',
      'aria-label': `${this.name} text`, 'data-editor': this.name,
    });
    container.append(this.gutter, el('div', { class: 'code' }, this.pre, this.textarea));
    this.textarea.addEventListener('input', () => { this.render(); onChange(); });
    this.textarea.addEventListener('scroll', () => this.syncScroll());
    this.textarea.addEventListener('keydown', (e) => {
      if (e.key === 'Tab' && !e.ctrlKey && !e.altKey && !e.metaKey) {
        e.preventDefault();
        document.execCommand('insertText', false, '  ');
      }
    });
    this.gutter.addEventListener('click', (e) => {
      const ln = e.target.closest('.ln');
      if (ln && this.marks.has(Number(ln.dataset.line))) this.goTo(Number(ln.dataset.line));
    });
    this.render();
  }

  get value() { return this.textarea.value; }

  set value(text) {
    this.textarea.value = text;
    this.textarea.scrollTop = 0;
    this.textarea.scrollLeft = 0;
    this.render();
  }

  setMarks(marks) {
    this.marks = marks;
    this.render();
  }

  render() {
    const lines = this.value.split('\n');
    if (lines.length > PLAIN_LINES && this.marks.size === 0) {
      // A day of readings: plain text, one node each, so typing stays fast.
      this.pre.textContent = this.value + '\n';
      this.gutterInner.textContent = lines.map((_, i) => i + 1).join('\n');
      this.gutterInner.classList.add('plain');
      this.syncScroll();
      return;
    }
    this.gutterInner.classList.remove('plain');
    const colour = this.value.length <= HIGHLIGHT_LIMIT;
    this.pre.innerHTML = lines.map((line, i) => {
      const mark = this.marks.get(i + 1);
      const cls = mark ? (mark.level === 'error' ? ' err-line' : ' warn-line') : '';
      return `<span class="line${cls}" data-line="${i + 1}">${colour ? highlightLine(line) : escape(line)}\n</span>`;
    }).join('');
    this.gutterInner.innerHTML = lines.map((_, i) => {
      const mark = this.marks.get(i + 1);
      if (!mark) return `<div class="ln" data-line="${i + 1}">${i + 1}</div>`;
      return `<div class="ln has-${mark.level}" data-line="${i + 1}" title="${escape(mark.messages.join('\n'))}">${i + 1}</div>`;
    }).join('');
    this.syncScroll();
  }

  syncScroll() {
    this.pre.scrollTop = this.textarea.scrollTop;
    this.pre.scrollLeft = this.textarea.scrollLeft;
    this.gutterInner.style.transform = `translateY(${-this.textarea.scrollTop}px)`;
  }

  lineHeight() {
    return parseFloat(getComputedStyle(this.textarea).lineHeight) || 18;
  }

  // Scrolls to a 1-based line, puts the caret there and flashes the line.
  goTo(line, focus = true) {
    const lines = this.value.split('\n');
    const target = Math.max(1, Math.min(line, lines.length));
    const offset = lines.slice(0, target - 1).reduce((n, l) => n + l.length + 1, 0);
    this.textarea.scrollTop = Math.max(0, (target - 4) * this.lineHeight());
    if (focus) {
      this.textarea.focus({ preventScroll: true });
      this.textarea.setSelectionRange(offset, offset);
    }
    this.syncScroll();
    const span = this.pre.querySelector(`.line[data-line="${target}"]`);
    if (span) {
      span.classList.add('flash');
      setTimeout(() => span.classList.remove('flash'), 1500);
    }
  }

  // The 1-based line of the first line containing every needle in order, or 0.
  findLine(needles) {
    const lines = this.value.split('\n');
    let from = 0;
    let found = 0;
    for (const needle of needles) {
      const i = lines.findIndex((l, n) => n >= from && l.includes(needle));
      if (i < 0) return 0;
      found = i + 1;
      from = i + 1;
    }
    return found;
  }
}

// ---------------------------------------------------------------------------------------------
// API

function apiKey() { return sessionStorage.getItem(KEY_STORAGE); }

let keyWaiters = [];
function askForKey(message) {
  $('key-error').textContent = message || '';
  $('key-dialog').hidden = false;
  $('key-input').value = '';
  $('key-input').focus();
  return new Promise((resolve) => keyWaiters.push(resolve));
}

async function api(method, path, body) {
  for (;;) {
    const key = apiKey();
    if (!key) {
      await askForKey();
      continue;
    }
    const response = await fetch(path, {
      method,
      headers: { Authorization: `Bearer ${key}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    if (response.status === 401) {
      sessionStorage.removeItem(KEY_STORAGE);
      await askForKey('That key was not accepted. Check it and try again.');
      continue;
    }
    const json = await response.json().catch(() => ({ error: `unexpected answer (${response.status})` }));
    if (!response.ok) throw new Error(json.error || `request failed (${response.status})`);
    return json;
  }
}

function setStatus(text, bad = false) {
  $('status').textContent = text;
  $('status').classList.toggle('bad', bad);
}

// ---------------------------------------------------------------------------------------------
// State and runs

const editors = {};
let examples = [];
let runSequence = 0;
let debounceTimer = null;
let messageWarnings = new Map(); // message index -> warnings of that message

function scheduleRun() {
  clearTimeout(debounceTimer);
  debounceTimer = setTimeout(run, DEBOUNCE_MS);
}

async function run() {
  const sequence = ++runSequence;
  const device = editors.device.value;
  const fhir = editors.fhir.value;
  setStatus('Checking…');
  try {
    const [validation, report] = await Promise.all([
      api('POST', '/v1/debugger/validate', { deviceMapping: device, fhirMapping: fhir }),
      api('POST', '/v1/debugger/test', {
        deviceMapping: device,
        fhirMapping: fhir,
        messages: editors.messages.value,
        identity: $('identity').value,
        envelope: $('envelope').checked,
      }),
    ]);
    if (sequence !== runSequence) return; // a newer run is under way
    showValidation(validation);
    showReport(report);
    const errors = validation.errors.length;
    setStatus(errors ? `${errors} mapping error(s)` : `Mappings valid · checked ${new Date().toLocaleTimeString()}`, errors > 0);
    document.body.dataset.runs = String(Number(document.body.dataset.runs || 0) + 1);
  } catch (e) {
    if (sequence === runSequence) setStatus(`Cannot check: ${e.message}`, true);
  }
}

function where(item) {
  const parts = [];
  if (item.line) parts.push(`line ${item.line}${item.column ? `:${item.column}` : ''}`);
  if (item.templateIndex !== null && item.templateIndex !== undefined) {
    parts.push(`template ${item.templateIndex}${item.typeName ? ` (${item.typeName})` : ''}`);
  }
  if (item.field) parts.push(item.field);
  return parts.join(' · ');
}

function showValidation(report) {
  for (const mapping of ['device', 'fhir']) {
    const marks = new Map();
    const list = $(`${mapping}-problems`);
    list.replaceChildren();
    const problems = [
      ...report.errors.filter((e) => e.mapping === mapping).map((e) => ({ ...e, level: 'error' })),
      ...report.warnings.filter((w) => (w.mapping || 'device') === mapping).map((w) => ({ ...w, level: 'warning' })),
    ];
    for (const p of problems) {
      if (p.line) {
        const mark = marks.get(p.line) || { level: p.level, messages: [] };
        if (p.level === 'error') mark.level = 'error';
        mark.messages.push(p.message);
        marks.set(p.line, mark);
      }
      list.append(el('li', {
        class: p.level, 'data-line': p.line || '',
        onclick: () => p.line && editors[mapping].goTo(p.line),
      }, el('span', { class: 'where', text: where(p) || mapping }),
      p.class ? el('span', { class: 'class', text: p.class }) : null,
      el('span', { text: p.message })));
    }
    if (!problems.length) {
      const summary = mapping === 'device' ? report.deviceMapping : report.fhirMapping;
      list.append(el('li', { class: 'ok', text: `No problems · ${summary ? summary.templates : 0} template(s)` }));
    }
    editors[mapping].setMarks(marks);
  }
}

function templateLink(error) {
  // Message errors name the device template line; group errors concern the FHIR mapping.
  if (!error.line) return null;
  return el('a', { onclick: () => editors.device.goTo(error.line), text: `device mapping line ${error.line}` });
}

function showReport(report) {
  const s = report.summary;
  const bad = s.failedMessages > 0 || s.failedGroups > 0 || report.mappingErrors.length > 0;
  $('summary').textContent = `${s.messages} message(s) · ${s.measurements} measurement(s) · ${s.observations} Observation(s)`
    + (s.failedMessages ? ` · ${s.failedMessages} failed message(s)` : '')
    + (s.failedGroups ? ` · ${s.failedGroups} failed group(s)` : '');
  $('summary').classList.toggle('bad', bad);
  const results = $('results');
  results.replaceChildren();

  if (report.mappingErrors.length) {
    results.append(el('h3', { class: 'section-title', text: 'Mapping errors' }));
    for (const e of report.mappingErrors) {
      results.append(el('div', { class: 'card failed' }, issue(e, 'error', e.mapping)));
    }
  }
  if (report.warnings.length) {
    results.append(el('h3', { class: 'section-title', text: 'Warnings' }));
    const card = el('div', { class: 'card' });
    for (const w of report.warnings) card.append(issue(w, 'warning', w.mapping));
    results.append(card);
  }

  results.append(el('h3', { class: 'section-title', text: 'Observations' }));
  if (!report.observations.length && !report.groupErrors.length) {
    results.append(el('p', { class: 'summary', text: 'No Observation: no measurement reached the FHIR mapping.' }));
  }
  for (const o of report.observations) results.append(observationCard(o));
  for (const g of report.groupErrors) {
    results.append(el('div', { class: 'card failed group-error' },
      el('h3', { text: `${g.group.typeName} · device ${g.group.deviceId}` }),
      el('div', { class: 'issue' }, el('span', { class: 'class', text: g.class }), g.message)));
  }

  messageWarnings = new Map();
  for (const w of report.warnings) {
    if (w.messageIndex === null || w.messageIndex === undefined) continue;
    if (!messageWarnings.has(w.messageIndex)) messageWarnings.set(w.messageIndex, []);
    messageWarnings.get(w.messageIndex).push(w);
  }
  results.append(el('h3', { class: 'section-title', text: 'Messages' }));
  // Thousands of cards would freeze the page: every message with a problem and the first few
  // others are shown, up to a limit, and the rest counted.
  const shown = report.messages
    .filter((m) => m.index < FIRST_MESSAGES || m.error || messageWarnings.has(m.index))
    .slice(0, MESSAGE_CARD_LIMIT);
  const cards = document.createDocumentFragment();
  for (const m of shown) cards.append(messageCard(m));
  results.append(cards);
  if (shown.length < report.messages.length) {
    results.append(el('p', { class: 'summary', id: 'messages-hidden',
      text: `${report.messages.length - shown.length} more message(s) not shown: the list holds the first ${FIRST_MESSAGES} messages and every one with an error or warning, at most ${MESSAGE_CARD_LIMIT} in all.` }));
  }
  drawCharts(report);
}

function issue(item, level, mapping) {
  const link = item.line && mapping
    ? el('a', { onclick: () => editors[mapping === 'fhir' ? 'fhir' : 'device'].goTo(item.line), text: `${mapping} mapping line ${item.line}` })
    : null;
  return el('div', { class: `issue ${level === 'warning' ? 'warning' : ''}` },
    item.class ? el('span', { class: 'class', text: item.class }) : null,
    item.message, link ? ' — ' : null, link);
}

function messageCard(m) {
  const card = el('div', { class: `card message${m.error ? ' failed' : ''}`, 'data-index': m.index });
  card.append(el('h3', {}, `Message ${m.index + 1}`, m.line ? el('span', { class: 'summary', text: ` · line ${m.line}` }) : null));
  if (m.templates.length) {
    card.append(el('div', { class: 'chips' }, 'Templates matched: ',
      m.templates.map((t) => el('span', { class: 'chip', text: `${t.templateIndex}: ${t.typeName}${t.matches > 1 ? ` ×${t.matches}` : ''}` }))));
  } else if (!m.error) {
    card.append(el('div', { class: 'summary', text: 'No template matched this message.' }));
  }
  if (m.measurements.length) {
    const rows = m.measurements.map((x) => el('tr', {},
      el('td', { text: x.Type }), el('td', { text: x.OccurrenceTimeUtc || '' }),
      el('td', { text: x.DeviceId || '' }), el('td', { text: x.PatientId || '' }),
      el('td', { text: (x.Properties || []).map((p) => `${p.Name}=${p.Value}`).join(', ') })));
    card.append(el('table', { class: 'measurements' },
      el('thead', {}, el('tr', {}, ['Type', 'Time (UTC)', 'Device', 'Patient', 'Values'].map((h) => el('th', { text: h })))),
      el('tbody', {}, rows)));
  }
  for (const w of messageWarnings.get(m.index) || []) card.append(issue(w, 'warning', null));
  if (m.error) {
    const link = templateLink(m.error);
    card.append(el('div', { class: 'issue' }, el('span', { class: 'class', text: m.error.class }), m.error.message, link ? ' — ' : null, link));
  }
  return card;
}

function observationCard(o) {
  const g = o.group;
  const title = `${g.typeName} · device ${g.deviceId}${g.patientId ? ` · patient ${g.patientId}` : ''}`;
  const body = el('pre', { class: 'json' });
  body.innerHTML = JSON.stringify(o.observation, null, 2).split('\n').map(highlightLine).join('\n');
  return el('div', { class: 'card observation' },
    el('h3', { text: title }),
    el('div', { class: 'summary', text: `window ${o.window.start} → ${o.window.end} (${o.window.interval})` }),
    el('details', { open: true }, el('summary', { text: 'Observation' }), body));
}

// ---------------------------------------------------------------------------------------------
// Chart: values over time per measurement type, from the Observations (SampledData expanded),
// or from the measurements for types that produced no Observation.

function parseTime(text) {
  if (!text) return NaN;
  // Seven fractional digits (the original's format) are more than Date.parse promises to read.
  return Date.parse(String(text).replace(/(\.\d{3})\d+/, '$1'));
}

function codeLabel(concept, fallback) {
  if (!concept) return fallback;
  const coding = (concept.coding || [])[0] || {};
  return coding.display || concept.text || coding.code || fallback;
}

function addValue(series, key, t, v) {
  if (!Number.isFinite(t) || !Number.isFinite(v)) return;
  if (!series.has(key)) series.set(key, []);
  series.get(key).push([t, v]);
}

function expandValue(series, label, value, start, time) {
  if (value.valueQuantity) addValue(series, label, time, Number(value.valueQuantity.value));
  const sd = value.valueSampledData;
  if (sd && typeof sd.data === 'string') {
    const origin = Number((sd.origin || {}).value || 0);
    const factor = sd.factor === undefined ? 1 : Number(sd.factor);
    const dims = Number(sd.dimensions || 1);
    const period = Number(sd.period || 0);
    sd.data.trim().split(/\s+/).forEach((item, i) => {
      const n = Number(item);
      if (item === 'E' || item === 'L' || item === 'U' || !Number.isFinite(n)) return;
      const key = dims > 1 ? `${label} [${i % dims}]` : label;
      addValue(series, key, start + Math.floor(i / dims) * period, origin + factor * n);
    });
  }
}

function chartData(report) {
  const byType = new Map();
  const typeSeries = (type) => {
    if (!byType.has(type)) byType.set(type, new Map());
    return byType.get(type);
  };
  const devices = new Set(report.observations.map((o) => o.group.deviceId));
  for (const o of report.observations) {
    const obs = o.observation || {};
    const start = parseTime(obs.effectiveDateTime || (obs.effectivePeriod || {}).start);
    const suffix = devices.size > 1 ? ` · ${o.group.deviceId}` : '';
    const series = typeSeries(o.group.typeName);
    expandValue(series, codeLabel(obs.code, o.group.typeName) + suffix, obs, start, start);
    for (const c of obs.component || []) expandValue(series, codeLabel(c.code, 'component') + suffix, c, start, start);
  }
  for (const m of report.messages) {
    for (const x of m.measurements) {
      if (byType.has(x.Type) && report.observations.some((o) => o.group.typeName === x.Type)) continue;
      const series = typeSeries(x.Type);
      for (const p of x.Properties || []) addValue(series, `${p.Name} (measurement)`, parseTime(x.OccurrenceTimeUtc), Number(p.Value));
    }
  }
  return byType;
}

function niceTicks(min, max, count) {
  if (min === max) { min -= 1; max += 1; }
  const step0 = (max - min) / count;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 5, 10].map((f) => f * mag).find((s) => s >= step0) || step0;
  const ticks = [];
  // From the step at or below min to the first step at or above max, so every point is inside.
  for (let v = Math.floor(min / step) * step; ; v += step) {
    ticks.push(Number(v.toPrecision(12)));
    if (v >= max - step * 1e-9) break;
  }
  return ticks;
}

function formatTime(t, span) {
  const iso = new Date(t).toISOString();
  if (span > 2 * 86400000) return iso.slice(5, 10) + ' ' + iso.slice(11, 16);
  return span > 120000 ? iso.slice(11, 16) : iso.slice(11, 19);
}

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function drawChart(type, series) {
  const W = 720, H = 220, L = 48, R = 12, T = 12, B = 28;
  const all = [...series.values()].flat();
  const t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(...all.map((p) => p[0]));
  const yTicks = niceTicks(Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1])), 4);
  const y0 = yTicks[0], y1 = yTicks[yTicks.length - 1];
  const span = Math.max(t1 - t0, 1);
  const x = (t) => L + ((t - t0) / span) * (W - L - R) + (t1 === t0 ? (W - L - R) / 2 : 0);
  const y = (v) => H - B - ((v - y0) / (y1 - y0 || 1)) * (H - T - B);
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `${type} over time`, 'data-type': type });
  for (const v of yTicks) {
    root.append(svg('line', { class: 'grid', x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    root.append(svg('text', { x: L - 4, y: y(v) + 4, 'text-anchor': 'end' }, String(v)));
  }
  const xTickCount = t1 === t0 ? 1 : 5;
  for (let i = 0; i < xTickCount; i++) {
    const t = xTickCount === 1 ? t0 : t0 + (span * i) / (xTickCount - 1);
    root.append(svg('text', { x: x(t), y: H - 8, 'text-anchor': i === 0 && xTickCount > 1 ? 'start' : (i === xTickCount - 1 && xTickCount > 1 ? 'end' : 'middle') }, formatTime(t, span)));
  }
  root.append(svg('line', { class: 'axis', x1: L, x2: L, y1: T, y2: H - B }));
  root.append(svg('line', { class: 'axis', x1: L, x2: W - R, y1: H - B, y2: H - B }));
  const legend = el('div', { class: 'legend' });
  [...series.entries()].forEach(([label, points], i) => {
    const color = COLORS[i % COLORS.length];
    points.sort((a, b) => a[0] - b[0]);
    const d = points.map((p, j) => `${j ? 'L' : 'M'}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join('');
    if (points.length > 1) root.append(svg('path', { d, fill: 'none', stroke: color, 'stroke-width': 1.5, class: 'series' }));
    if (points.length <= 400) {
      for (const p of points) {
        const dot = svg('circle', { cx: x(p[0]).toFixed(1), cy: y(p[1]).toFixed(1), r: 2.5, fill: color, class: 'point' });
        dot.append(svg('title', {}, `${label}: ${p[1]} at ${new Date(p[0]).toISOString()}`));
        root.append(dot);
      }
    }
    const item = el('span', { text: `${label} (${points.length})` });
    item.style.setProperty('--c', color);
    legend.append(item);
  });
  return el('figure', { 'data-type': type }, el('figcaption', { text: type }), root, legend);
}

function drawCharts(report) {
  const chart = $('chart');
  chart.replaceChildren();
  const data = chartData(report);
  for (const [type, series] of data) {
    for (const [k, v] of series) if (!v.length) series.delete(k);
    if (series.size) chart.append(drawChart(type, series));
  }
  if (!chart.childElementCount) chart.append(el('p', { class: 'summary', text: 'The chart appears when measurements have numeric values.' }));
}

// ---------------------------------------------------------------------------------------------
// Loading and exporting

function loadPair(device, fhir, messages, envelope) {
  editors.device.value = device;
  editors.fhir.value = fhir;
  if (messages !== undefined) editors.messages.value = messages;
  if (envelope !== undefined) $('envelope').checked = envelope;
  run();
}

function loadExample(name) {
  const example = examples.find((e) => e.name === name);
  if (!example) return;
  loadPair(example.deviceMapping, example.fhirMapping, example.messages, example.envelope);
  setStatus(`Loaded the ${example.name} example`);
}

function readFileInto(input, apply) {
  input.addEventListener('change', async () => {
    const file = input.files[0];
    if (!file) return;
    apply(await file.text(), file.name);
    input.value = '';
    run();
  });
}

function download(name, text) {
  const url = URL.createObjectURL(new Blob([text], { type: 'application/json' }));
  const a = el('a', { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// ---------------------------------------------------------------------------------------------
// The guided example: heart rate from a wearable, blood pressure with components.

const GUIDE = [
  { title: 'Welcome', editor: null, text: 'This tour loads the <b>wearable</b> example and explains each field where it is used. A device message goes through the <b>device mapping</b> (left) into measurements, which the <b>FHIR mapping</b> (right) turns into Observations. Results on the lower right update as you type.' },
  { title: 'Collection of templates', editor: 'device', find: ['"templateType": "CollectionContent"'], text: '<code>CollectionContent</code> holds a list of device templates. Every template is tried on every message; each one that matches produces measurements.' },
  { title: 'Heart rate: typeName', editor: 'device', find: ['"typeName": "heartrate"'], text: '<code>typeName</code> names the measurement type. The FHIR template with the same <code>typeName</code> turns these measurements into Observations.' },
  { title: 'typeMatchExpression', editor: 'device', find: ['"typeName": "heartrate"', 'typeMatchExpression'], text: 'A JSONPath that selects the part of the message this template applies to: here, any object with a <code>heartRate</code> field. The selected part is <code>$.matchedToken</code> in the other expressions.' },
  { title: 'Device, patient and time', editor: 'device', find: ['"typeName": "heartrate"', 'deviceIdExpression'], text: '<code>deviceIdExpression</code>, <code>patientIdExpression</code> and <code>timestampExpression</code> say where the device id, the patient id and the time of the reading are. Measurements are grouped per device, patient and type; the time decides the Observation window.' },
  { title: 'Values', editor: 'device', find: ['"typeName": "heartrate"', '"valueName": "hr"'], text: '<code>values</code> lists the readings: <code>valueName</code> is the name the FHIR mapping refers to, <code>valueExpression</code> where the number is, <code>required</code> makes a message without it an error.' },
  { title: 'FHIR heart rate: codes', editor: 'fhir', find: ['"typeName": "heartrate"', '"codes"'], text: 'The FHIR template for <code>heartrate</code> gives the Observation its <code>codes</code> (LOINC 8867-4 Heart rate) and <code>category</code>.' },
  { title: 'periodInterval', editor: 'fhir', find: ['"typeName": "heartrate"', 'periodInterval'], text: '<code>periodInterval</code> is the window in minutes: 60 makes one Observation per device and hour; 0 one Observation per reading.' },
  { title: 'SampledData', editor: 'fhir', find: ['"typeName": "heartrate"', '"valueType": "SampledData"'], text: 'A <code>SampledData</code> value packs all readings of the window into one series: <code>defaultPeriod</code> is the spacing in milliseconds, <code>E</code> marks a slot without a reading. The chart above the results expands it back into points.' },
  { title: 'Blood pressure: two values', editor: 'device', find: ['"typeName": "bloodpressure"', '"valueName": "systolic"'], text: 'The blood-pressure template matches messages with both <code>systolic</code> and <code>diastolic</code>, and produces one measurement with two values.' },
  { title: 'Components', editor: 'fhir', find: ['"typeName": "bloodpressure"', '"components"'], text: 'The FHIR template puts each value in a <code>component</code> with its own code (8480-6 systolic, 8462-4 diastolic) and a <code>Quantity</code> in mmHg. <code>valueName</code> links each component to the device value.' },
  { title: 'Try it', editor: 'messages', find: ['systolic'], text: 'Change a number in this message and watch the Observation and the chart change. Rename <code>"typeName"</code> in the device mapping to see an error marked at its line, then fix it.' },
];
let guideStep = 0;

function showGuide(step) {
  guideStep = Math.max(0, Math.min(step, GUIDE.length - 1));
  const s = GUIDE[guideStep];
  $('guide').hidden = false;
  $('guide-title').textContent = s.title;
  $('guide-body').innerHTML = s.text; // fixed text of this file, not user data
  $('guide-step').textContent = `${guideStep + 1} / ${GUIDE.length}`;
  $('guide-prev').disabled = guideStep === 0;
  $('guide-next').textContent = guideStep === GUIDE.length - 1 ? 'Done' : 'Next';
  if (s.editor) {
    const line = editors[s.editor].findLine(s.find);
    if (line) editors[s.editor].goTo(line, false);
  }
}

// ---------------------------------------------------------------------------------------------
// Start

async function start() {
  editors.device = new Editor($('device-editor'), scheduleRun);
  editors.fhir = new Editor($('fhir-editor'), scheduleRun);
  editors.messages = new Editor($('messages-editor'), scheduleRun);
  $('key-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const key = $('key-input').value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_STORAGE, key);
    $('key-dialog').hidden = true;
    const waiters = keyWaiters;
    keyWaiters = [];
    waiters.forEach((resolve) => resolve());
  });
  $('identity').addEventListener('change', run);
  $('envelope').addEventListener('change', run);
  $('load-example').addEventListener('click', () => loadExample($('example-select').value));
  $('load-service').addEventListener('click', async () => {
    try {
      const m = await api('GET', '/v1/debugger/mappings');
      loadPair(m.deviceMapping, m.fhirMapping);
      setStatus('Loaded the mappings the service uses now');
    } catch (e) {
      setStatus(`Cannot load the service's mappings: ${e.message}`, true);
    }
  });
  $('export').addEventListener('click', () => {
    download('devicecontent.json', editors.device.value);
    download('fhirmapping.json', editors.fhir.value);
  });
  $('sign-out').addEventListener('click', () => {
    sessionStorage.removeItem(KEY_STORAGE);
    setStatus('The key is forgotten; the next check asks for it.');
  });
  readFileInto($('device-file'), (text, name) => { editors.device.value = text; setStatus(`Loaded ${name}`); });
  readFileInto($('fhir-file'), (text, name) => { editors.fhir.value = text; setStatus(`Loaded ${name}`); });
  readFileInto($('messages-file'), (text, name) => { editors.messages.value = text; setStatus(`Loaded ${name}`); });
  $('guide-open').addEventListener('click', () => { loadExample('wearable'); showGuide(0); });
  $('guide-close').addEventListener('click', () => { $('guide').hidden = true; });
  $('guide-prev').addEventListener('click', () => showGuide(guideStep - 1));
  $('guide-next').addEventListener('click', () => {
    if (guideStep === GUIDE.length - 1) $('guide').hidden = true;
    else showGuide(guideStep + 1);
  });

  try {
    examples = (await api('GET', '/v1/debugger/examples')).examples;
  } catch (e) {
    setStatus(`Cannot list the examples: ${e.message}`, true);
  }
  $('example-select').replaceChildren(...examples.map((e) => el('option', { value: e.name, title: e.title, text: e.name })));
  document.body.dataset.ready = 'true';
  if (examples.length) loadExample(examples[0].name);
}

document.addEventListener('DOMContentLoaded', start);

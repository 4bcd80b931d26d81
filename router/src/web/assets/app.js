// The dashboard: reads the router's event stream (/ui/stream) with fetch() so the
// Authorization header goes with it, renders hosts, VMs, energy, failovers and the
// event timeline from each frame, and calls the ordinary /v1 routes for actions.
// A 401 anywhere sends the tab back to the login page, with no data left on screen.
'use strict';

const TOKEN_KEY = 'wisp.token';
const token = sessionStorage.getItem(TOKEN_KEY);
if (!token) location.replace('/login');

// What the page keeps between frames: the newest picture and the bounded lists the
// stream only sends the new part of.
const MAX_EVENTS = 500;
const MAX_HISTORY = 6 * 360;
// A frame comes at least every second; this long without one means the link is dead.
const STALE_MS = 5000;
const state = { snap: null, events: [], history: [], busy: new Set(), target: {} };

const $ = (id) => document.getElementById(id);

function toLogin() {
  sessionStorage.removeItem(TOKEN_KEY);
  $('main').hidden = true;
  location.replace('/login?why=refused');
}

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

const pad = (n) => String(n).padStart(2, '0');
function clock(ms) {
  const d = new Date(ms);
  return pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
}
function dur(ms) {
  if (ms < 1000) return ms + ' ms';
  if (ms < 60000) return (ms / 1000).toFixed(1) + ' s';
  return Math.round(ms / 60000) + ' min';
}
function gib(b) { return (b / 1073741824).toFixed(1); }
function kwh(x) { return x >= 10 ? x.toFixed(1) + ' kWh' : (x * 1000).toFixed(0) + ' Wh'; }

// ---- the stream -------------------------------------------------------------------

function setConn(text, cls) {
  const c = $('conn');
  c.textContent = text;
  c.className = 'pill ' + (cls || '');
}

async function connect() {
  let delay = 1000;
  for (;;) {
    const abort = new AbortController();
    let watchdog = null;
    const arm = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => abort.abort(), STALE_MS);
    };
    try {
      arm();
      const r = await fetch('/ui/stream', {
        headers: { Authorization: 'Bearer ' + token },
        cache: 'no-store',
        signal: abort.signal,
      });
      if (r.status === 401) return toLogin();
      if (!r.ok) throw new Error('HTTP ' + r.status);
      setConn('live', 'live');
      delay = 1000;
      await readEvents(r.body, (m) => { arm(); onFrame(m); });
      throw new Error('stream ended');
    } catch (e) {
      setConn('reconnecting (' + (abort.signal.aborted ? 'no data' : e.message) + ')', 'bad');
    } finally {
      clearTimeout(watchdog);
    }
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 15000);
  }
}

// Server-sent events by hand: blocks end with a blank line, `data:` lines carry JSON.
async function readEvents(body, onMessage) {
  const reader = body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let data = '';
      for (const line of block.split('\n')) {
        if (line.startsWith('data: ')) data += line.slice(6);
      }
      if (data) onMessage(JSON.parse(data));
    }
  }
}

function onFrame(m) {
  if (m.snap.error) {
    toast(m.snap.error, true);
    return;
  }
  state.snap = m.snap;
  state.events = state.events.concat(m.events).slice(-MAX_EVENTS);
  state.history = state.history.concat(m.history).slice(-MAX_HISTORY);
  $('main').hidden = false;
  render();
}

// ---- actions ----------------------------------------------------------------------

let toastTimer = null;
function toast(text, bad) {
  const t = $('toast');
  t.textContent = text;
  t.className = 'toast' + (bad ? ' bad' : '');
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, bad ? 12000 : 6000);
}

// Resolves true when the operator confirms.
function confirmAction(text, okLabel) {
  return new Promise((resolve) => {
    const m = $('confirm');
    $('confirm-text').textContent = text;
    $('confirm-ok').textContent = okLabel || 'confirm';
    m.hidden = false;
    const done = (yes) => {
      m.hidden = true;
      $('confirm-ok').onclick = null;
      $('confirm-cancel').onclick = null;
      resolve(yes);
    };
    $('confirm-ok').onclick = () => done(true);
    $('confirm-cancel').onclick = () => done(false);
  });
}

// Calls a /v1 route; the router's own words come back on success and on refusal.
async function act(key, what, method, path, body) {
  if (state.busy.has(key)) return;
  state.busy.add(key);
  render();
  toast(what + '…');
  try {
    const r = await fetch(path, {
      method,
      headers: { Authorization: 'Bearer ' + token, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    let j = null;
    try { j = JSON.parse(text); } catch (_) { /* not JSON: shown as text */ }
    if (r.status === 401) return toLogin();
    if (r.status === 403) {
      // A read token: the router refuses every action, so the page stops offering them.
      document.body.classList.add('read-only');
      toast(what + ': refused, this token may only read (log in with an admin token to act)', true);
    } else if (!r.ok) {
      toast(what + ' refused: ' + ((j && j.error) || text || 'HTTP ' + r.status), true);
    } else {
      toast(what + ': ' + summary(j));
    }
  } catch (e) {
    toast(what + ' failed: cannot reach the router (' + e.message + ')', true);
  } finally {
    state.busy.delete(key);
    render();
  }
}

function summary(j) {
  if (!j) return 'done';
  if (j.message) return j.message;
  if (j.vm && j.to) return j.vm + ' moved from ' + j.from + ' to ' + j.to + ' (' + j.downtime_ms + ' ms pause)';
  if (typeof j.enabled === 'boolean') return j.enabled ? 'done; the planner runs a round now' : 'done; hosts stay as they are';
  return 'done';
}

const enc = encodeURIComponent;

async function maintenance(host, on) {
  if (on && host.vm_names.length) {
    const ok = await confirmAction('Put ' + host.name + ' in maintenance? Its ' +
      host.vm_names.length + ' VM(s) (' + host.vm_names.join(', ') +
      ') will be live-migrated to other hosts.', 'maintenance on');
    if (!ok) return;
  }
  act('host:' + host.name, 'maintenance ' + (on ? 'on' : 'off') + ' for ' + host.name, 'POST',
    '/v1/hosts/' + enc(host.name) + '/maintenance', { on });
}

async function suspend(host) {
  const off = !(host.sleep || []).includes('ram');
  const vms = host.vm_names;
  const text = 'Put ' + host.name + ' to sleep (' + (off ? 'soft power-off' : 'suspend to RAM') + ')?' +
    (vms.length ? ' It runs ' + vms.length + ' VM(s) (' + vms.join(', ') +
      '): they stop with it, and failover restarts them elsewhere.' : '');
  if (!(await confirmAction(text, vms.length ? 'stop VMs and sleep' : 'sleep'))) return;
  act('host:' + host.name, 'suspend ' + host.name, 'POST',
    '/v1/hosts/' + enc(host.name) + '/suspend', { off, force: vms.length > 0 });
}

function wake(host) {
  act('host:' + host.name, 'wake ' + host.name, 'POST', '/v1/hosts/' + enc(host.name) + '/wake', {});
}

function migrate(vm) {
  if (!vm) return;
  const to = state.target[vm.name];
  if (!to) return toast('pick a host to move ' + vm.name + ' to', true);
  act('vm:' + vm.name, 'migrate ' + vm.name + ' to ' + to, 'POST',
    '/v1/vms/' + enc(vm.name) + '/migrate', { to });
}

// Buttons and lists are found by their data attributes at the moment they are used,
// so an action always works on the newest frame, and the page can update elements in
// place (see morph) without losing a click between two frames.
document.addEventListener('click', (ev) => {
  const b = ev.target.closest('button[data-action]');
  if (!b || b.disabled) return;
  const s = state.snap;
  if (!s) return;
  const host = s.hosts.find((x) => x.name === b.dataset.host);
  const vm = s.vms.find((x) => x.name === b.dataset.vm);
  switch (b.dataset.action) {
    case 'maintenance': if (host) maintenance(host, b.dataset.on === 'true'); break;
    case 'suspend': if (host) suspend(host); break;
    case 'wake': if (host) wake(host); break;
    case 'migrate': migrate(vm); break;
  }
});
document.addEventListener('change', (ev) => {
  const sel = ev.target.closest('select[data-vm]');
  if (sel) state.target[sel.dataset.vm] = sel.value;
});

$('energy-toggle').addEventListener('click', () => {
  const on = !(state.snap && state.snap.energy.enabled);
  act('energy', 'energy mode ' + (on ? 'on' : 'off'), 'POST', '/v1/energy', { on });
});
$('logout').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  location.replace('/login');
});

// ---- rendering --------------------------------------------------------------------

// Brings `parent`'s children in line with freshly built `kids`, changing only what
// differs: an element whose key, tag or kind changed is replaced, others keep their
// node (so a button being pressed, or a list a user is reading, stays put).
function morphChildren(parent, kids) {
  const old = [...parent.childNodes];
  kids.forEach((k, i) => {
    if (i < old.length) morph(old[i], k);
    else parent.appendChild(k);
  });
  for (let i = kids.length; i < old.length; i++) old[i].remove();
}

function morph(o, n) {
  const key = (x) => (x.dataset ? x.dataset.key || '' : '');
  if (o.nodeType !== n.nodeType || o.nodeName !== n.nodeName || key(o) !== key(n)) {
    o.replaceWith(n);
    return;
  }
  if (o.nodeType !== Node.ELEMENT_NODE) {
    if (o.nodeValue !== n.nodeValue) o.nodeValue = n.nodeValue;
    return;
  }
  for (const a of [...o.attributes]) if (!n.hasAttribute(a.name)) o.removeAttribute(a.name);
  for (const a of [...n.attributes]) if (o.getAttribute(a.name) !== a.value) o.setAttribute(a.name, a.value);
  if ('selected' in n) o.selected = n.selected;
  morphChildren(o, [...n.childNodes]);
}

function render() {
  const s = state.snap;
  if (!s) return;
  renderEnergy(s);
  renderHosts(s);
  // A select being used keeps its list: rebuilding it would close it under the user.
  const using = document.activeElement;
  if (!(using && using.tagName === 'SELECT' && using.closest('#vms'))) renderVms(s);
  renderFailovers();
  renderEvents();
}

function hostEnergy(s, name) {
  return (s.energy.hosts || []).find((e) => e.host === name);
}

function renderHosts(s) {
  const cards = s.hosts.map((host) => {
    const e = hostEnergy(s, host.name);
    const busy = state.busy.has('host:' + host.name);
    const maint = host.maintenance || host.state === 'maintenance';
    const linked = !!host.genie_version;
    // Metrics and "sleep" need a genie heard now; "wake" needs a host that sleeps or is off.
    const awake = linked && ['up', 'suspect', 'maintenance'].includes(host.state);
    const canWake = ['standby', 'down', 'fenced'].includes(host.state);
    const cpu = host.cpu_percent;
    const memPct = host.mem_total_bytes ? 100 * host.mem_used_bytes / host.mem_total_bytes : null;
    const watts = e && e.watts !== null && e.watts !== undefined ? Math.round(e.watts) + ' W' : '';
    return h('article', { class: 'host s-' + host.state, 'data-key': host.name, 'data-host': host.name, 'data-state': host.state },
      h('header', {},
        h('span', { class: 'name', text: host.name }),
        h('span', { class: 'badge state s-' + host.state, text: host.state })),
      h('div', { class: 'line power' }, 'power ' + host.power + (watts ? ' · ' + watts : '') +
        (e && e.depth ? ' · sleeps ' + e.depth : '') +
        (host.accelerator ? ' · ' + host.accelerator : '')),
      cpu !== null && cpu !== undefined && awake ? [
        h('div', { class: 'line', text: 'CPU ' + cpu.toFixed(0) + ' %' }),
        h('div', { class: 'bar' }, h('div', { style: 'width:' + Math.min(100, cpu) + '%' })),
      ] : null,
      memPct !== null && awake ? [
        h('div', { class: 'line', text: 'memory ' + gib(host.mem_used_bytes) + ' / ' + gib(host.mem_total_bytes) + ' GiB' }),
        h('div', { class: 'bar' }, h('div', { style: 'width:' + memPct.toFixed(0) + '%' })),
      ] : null,
      host.quarantine ? h('div', { class: 'line error', text: 'quarantined: ' + host.quarantine }) : null,
      h('div', { class: 'vmlist' }, host.vm_names.map((n) => h('span', { class: 'chip', 'data-vm': n, text: n }))),
      h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'quiet', 'data-action': 'maintenance', 'data-on': String(!maint),
          'data-host': host.name, disabled: busy }, maint ? 'end maintenance' : 'maintenance'),
        awake ? h('button', { type: 'button', class: 'quiet', 'data-action': 'suspend', 'data-host': host.name,
          disabled: busy }, 'sleep') : null,
        canWake ? h('button', { type: 'button', class: 'quiet', 'data-action': 'wake', 'data-host': host.name,
          disabled: busy }, 'wake') : null));
  });
  morphChildren($('hosts'), cards);
}

function renderVms(s) {
  const up = s.hosts.filter((x) => x.state === 'up').map((x) => x.name);
  const rows = s.vms.map((vm) => {
    const busy = state.busy.has('vm:' + vm.name);
    const targets = up.filter((n) => n !== vm.host);
    if (state.target[vm.name] && !targets.includes(state.target[vm.name])) delete state.target[vm.name];
    // Progress counts only while the move runs: the model keeps the last figures after.
    const moving = vm.op && vm.op.op === 'migrate';
    const p = moving ? vm.migration : null;
    const pct = p && p.total_bytes ? Math.min(100, 100 * p.transferred_bytes / p.total_bytes) : null;
    let mig = '';
    if (vm.op) mig = vm.op.op === 'migrate' ? 'moving → ' + vm.op.to : vm.op.op + '…';
    const sel = h('select', { 'aria-label': 'move ' + vm.name + ' to', 'data-vm': vm.name, disabled: busy },
      h('option', { value: '' }, 'host…'),
      targets.map((n) => h('option', { value: n, selected: state.target[vm.name] === n }, n)));
    return h('tr', { 'data-key': vm.name + '@' + (vm.host || ''), 'data-vm': vm.name, 'data-host': vm.host || '', 'data-state': vm.state, 'data-op': vm.op ? vm.op.op : '' },
      h('td', { class: 'name', text: vm.name }),
      h('td', { class: 'vm-host', text: vm.host || '–' }),
      h('td', { class: 'state', text: vm.state }),
      h('td', { text: vm.vcpus + ' vCPU · ' + vm.mem_mib + ' MiB' }),
      h('td', { class: 'migration' }, mig, pct !== null ? [' ', h('span', { class: 'progress' },
        h('div', { style: 'width:' + pct.toFixed(0) + '%' })), ' ' + pct.toFixed(0) + ' %'] : null),
      h('td', {}, sel, ' ', h('button', { type: 'button', class: 'quiet', 'data-action': 'migrate',
        'data-vm': vm.name, disabled: busy || !targets.length }, 'move')));
  });
  morphChildren($('vms').tBodies[0], rows);
}

function renderEnergy(s) {
  const e = s.energy;
  $('energy-toggle').disabled = state.busy.has('energy');
  $('energy-toggle').textContent = 'energy mode: ' + (e.enabled ? 'on' : 'off');
  $('energy-toggle').dataset.on = e.enabled;
  $('watts').textContent = Math.round(e.watts_now) + ' W';
  const less = e.watts_all_on > 0 ? Math.round(100 * (1 - e.watts_now / e.watts_all_on)) : 0;
  $('watts-sub').textContent = 'all on: ' + Math.round(e.watts_all_on) + ' W' + (less > 0 ? ' (' + less + ' % less)' : '');
  $('saved-today').textContent = kwh(s.saved_today_kwh);
  // The router counts "today" from midnight UTC, or from its own start if later.
  $('saved-today-sub').textContent = 'since ' + clock(s.today_since_ms).slice(0, 5) +
    (s.today_since_ms % 86400000 ? ' (router start)' : '');
  $('saved-total').textContent = kwh(e.saved_kwh);
  $('saved-total-sub').textContent = 'of ' + kwh(e.all_on_kwh) + ' all-on, over ' + dur(Math.round(e.accounted_s * 1000));
  $('asleep').textContent = e.asleep + ' of ' + (e.awake + e.asleep);
  $('asleep-sub').textContent = e.executing ? 'a plan is running' : (e.enabled ? 'energy mode on' : 'energy mode off');
  morphChildren($('decision'), decision(e).map((x) => (x instanceof Node ? x : document.createTextNode(x))));
  plot($('asleep-plot'), state.history, [{ key: 'asleep', color: '#3d5a98', fill: true }], { integer: true, ymin: Math.max(1, e.awake + e.asleep) });
  plot($('watts-plot'), state.history, [
    { key: 'watts_all_on', color: '#c9ced6' },
    { key: 'watts', color: '#0b63ce' },
  ], {});
}

// The planner's last decision, in words.
function decision(e) {
  const out = [];
  const d = e.last;
  if (!d) {
    out.push(e.enabled ? 'The planner has not decided anything yet.' : 'Energy mode is off: hosts stay as they are.');
  } else {
    const acts = [];
    if (d.migrations) acts.push(d.migrations + ' migration(s) in ' + d.batches + ' batch(es)');
    if (d.wake.length) acts.push('wake ' + d.wake.join(', '));
    if (d.sleep.length) acts.push('put ' + d.sleep.join(', ') + ' to sleep');
    if (d.unplaced.length) acts.push('no room for ' + d.unplaced.join(', '));
    out.push(h('strong', {}, 'Last decision (' + clock(d.at_ms) + '): '));
    out.push(d.reason + (acts.length ? ' → ' + acts.join('; ') + '.' : ' → nothing to do.'));
    if (d.outcome) out.push(' Result: ' + d.outcome + '.');
  }
  if (e.waiting && e.waiting.length) out.push(h('div', { class: 'sub' }, 'Waiting: ' + e.waiting.join('; ')));
  return out;
}

// A small line plot of `series` over the history, with a time axis and a value axis.
function plot(svg, hist, series, opts) {
  // Drawn at the element's own size, so text is never stretched on a narrow screen.
  const W = Math.max(200, Math.round(svg.clientWidth || 600)), H = 120, L = 34, R = 8, T = 8, B = 20;
  svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
  const NS = 'http://www.w3.org/2000/svg';
  const el = (tag, attrs, text) => {
    const x = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) x.setAttribute(k, v);
    if (text !== undefined) x.textContent = text;
    return x;
  };
  const kids = [];
  if (hist.length < 2) {
    kids.push(el('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle' }, 'history starts: a point every 10 s'));
    svg.replaceChildren(...kids);
    return;
  }
  const t0 = hist[0].t_ms, t1 = hist[hist.length - 1].t_ms;
  let ymax = opts.ymin || 0;
  for (const s of series) for (const p of hist) ymax = Math.max(ymax, p[s.key] || 0);
  const step = niceStep(ymax / 4, opts.integer);
  ymax = Math.max(step, Math.ceil(ymax / step) * step);
  const X = (t) => L + (W - L - R) * (t - t0) / Math.max(1, t1 - t0);
  const Y = (v) => T + (H - T - B) * (1 - v / ymax);
  for (let v = 0; v <= ymax + 1e-9; v += step) {
    kids.push(el('line', { x1: L, x2: W - R, y1: Y(v), y2: Y(v), stroke: '#e3e6eb' }));
    kids.push(el('text', { x: L - 4, y: Y(v) + 3, 'text-anchor': 'end' }, fmtNum(v)));
  }
  const span = t1 - t0;
  const tstep = [10e3, 30e3, 60e3, 300e3, 600e3, 1800e3, 3600e3, 7200e3].find((x) => span / x <= 6) || 7200e3;
  for (let t = Math.ceil(t0 / tstep) * tstep; t <= t1; t += tstep) {
    kids.push(el('line', { x1: X(t), x2: X(t), y1: T, y2: H - B, stroke: '#eef0f3' }));
    kids.push(el('text', { x: X(t), y: H - 6, 'text-anchor': 'middle' }, tstep < 60e3 ? clock(t) : clock(t).slice(0, 5)));
  }
  for (const s of series) {
    // Steps: a value holds until the next sample (host counts change in jumps).
    let d = '';
    hist.forEach((p, i) => {
      const y = Y(p[s.key] || 0);
      d += i === 0 ? 'M' + X(p.t_ms) + ',' + y : 'H' + X(p.t_ms) + 'V' + y;
    });
    if (s.fill) kids.push(el('path', { d: d + 'V' + Y(0) + 'H' + X(t0) + 'Z', fill: s.color, 'fill-opacity': 0.18, stroke: 'none' }));
    kids.push(el('path', { d, fill: 'none', stroke: s.color, 'stroke-width': 1.6, 'vector-effect': 'non-scaling-stroke' }));
  }
  svg.replaceChildren(...kids);
}

function niceStep(raw, integer) {
  if (!(raw > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  const f = raw / p;
  const step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
  return integer ? Math.max(1, Math.round(step)) : step;
}
function fmtNum(v) { return v >= 1000 ? (v / 1000).toFixed(v % 1000 ? 1 : 0) + 'k' : String(+v.toFixed(2)); }

// Failovers from the event log: a host detected silent, proven off, its VMs restarted.
function incidents() {
  const open = {}, all = [];
  for (const e of state.events) {
    const hname = e.host;
    if ((e.kind === 'host_suspect' || e.kind === 'host_unreachable') && hname && !open[hname]) {
      open[hname] = { host: hname, detected: e.at_ms, why: e.message, proven: null, proof: '', lost: [], restarted: [], back: null };
      all.push(open[hname]);
    } else if ((e.kind === 'host_down' || e.kind === 'host_fenced') && hname && open[hname]) {
      // Only after a detection: a host found off at the router's start is no failover.
      if (!open[hname].proven) { open[hname].proven = e.at_ms; open[hname].proof = e.message; }
    } else if (e.kind === 'vm_lost' && hname && open[hname]) {
      open[hname].lost.push(e.vm);
    } else if (e.kind === 'failover' && e.vm) {
      const m = /its host (\S+) is proven off/.exec(e.message);
      const inc = m && open[m[1]];
      if (inc) inc.restarted.push({ vm: e.vm, on: hname, at: e.at_ms });
    } else if (e.kind === 'host_up' && hname && open[hname]) {
      open[hname].back = e.at_ms;
      delete open[hname];
    }
  }
  return all.filter((i) => i.proven || !i.back).slice(-5).reverse();
}

function renderFailovers() {
  const list = incidents();
  $('failovers-panel').hidden = list.length === 0;
  morphChildren($('failovers'), list.map((i) => {
    const rel = (t) => '+' + dur(t - i.detected);
    return h('li', { 'data-failover': i.host },
      h('strong', {}, i.host), ' ', h('span', { class: 'sub', text: i.why }),
      h('div', { class: 'steps' },
        h('span', { class: 'step done' }, 'detected ' + clock(i.detected)),
        h('span', { class: 'step ' + (i.proven ? 'done' : 'wait'), title: i.proof },
          i.proven ? 'proven off ' + rel(i.proven) : 'waiting for proof it is off'),
        i.restarted.map((r) => h('span', { class: 'step done' }, 'restarted ' + r.vm + ' on ' + r.on + ' ' + rel(r.at))),
        i.back ? h('span', { class: 'step done' }, 'back up ' + rel(i.back)) : null));
  }));
}

function renderEvents() {
  const evs = state.events.slice(-150).reverse();
  morphChildren($('events'), evs.map((e) => h('li', { class: 'ev' },
    h('span', { class: 't', text: clock(e.at_ms) }),
    h('span', { class: 'k k-' + e.kind, text: e.kind.replace(/_/g, ' ') }),
    h('span', { class: 'm', text: e.message }))));
}

// Plots are drawn at their element's size: draw again when it changes.
window.addEventListener('resize', () => render());
if (token) connect();

// The sbtrain dashboard page: reads /api/status once, then follows
// /events (server-sent events carrying the same JSON) and redraws. Nothing
// is fetched from outside this server. Tests read the data-* attributes:
// tr[data-member-row] with data-member-id and data-state (live|gone),
// #loss-canvas[data-loss-points], and data-run-state / data-generation /
// data-updates on #app.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const colors = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f'];
  let last = null;
  let updates = 0;

  const fmt = (v, digits = 4) => (v === null || v === undefined || !isFinite(v)) ? '–' : Number(v).toPrecision(digits);
  const fmtInt = (v) => (v === null || v === undefined) ? '–' : Math.round(v).toLocaleString('en-US');
  const fmtBytes = (b) => {
    if (!b) return '0 B';
    const u = ['B', 'kB', 'MB', 'GB', 'TB'];
    let i = 0;
    while (b >= 1000 && i < u.length - 1) { b /= 1000; i++; }
    return b.toFixed(i ? 1 : 0) + ' ' + u[i];
  };
  const fmtSeconds = (s) => {
    if (!isFinite(s) || s < 0) return '–';
    if (s < 1) return (s * 1000).toPrecision(3) + ' ms';
    if (s < 90) return s.toFixed(1) + ' s';
    if (s < 5400) return (s / 60).toFixed(1) + ' min';
    return (s / 3600).toFixed(1) + ' h';
  };
  const since = (t) => {
    if (!t) return '–';
    const s = (Date.now() - Date.parse(t)) / 1000;
    return s < 1 ? 'now' : fmtSeconds(s) + ' ago';
  };
  const text = (id, v) => { const e = $(id); if (e.textContent !== String(v)) e.textContent = v; };
  const el = (tag, cls, content) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (content !== undefined) e.textContent = content;
    return e;
  };

  function phaseName(st, p) {
    if (st.phases && p < st.phases.length) return st.phases[p].name;
    return 'done';
  }

  function render(st) {
    last = st;
    updates++;
    const app = $('app');
    app.dataset.runState = st.state;
    app.dataset.generation = String(st.generation);
    app.dataset.updates = String(updates);
    document.title = 'sbtrain ' + st.run + ' · ' + st.state;
    text('run-name', st.run);
    text('method', st.method ? '(' + st.method + ')' : '');
    const badge = $('run-state');
    badge.textContent = st.state;
    badge.className = 'badge ' + st.state;

    const nPhases = st.phases ? st.phases.length : 0;
    const p = st.position.phase;
    if (p >= nPhases) {
      text('phase', 'done');
      text('phase-sub', nPhases + ' of ' + nPhases + ' phases');
    } else {
      text('phase', (p + 1) + '/' + nPhases + ' ' + phaseName(st, p));
      text('phase-sub', 'step ' + fmtInt(st.position.step) + ' of ' + fmtInt(st.steps_per_phase));
    }
    text('loss', fmt(st.loss));
    text('rate', st.samples_per_sec > 0 ? fmtInt(st.samples_per_sec) : '–');
    text('live', st.live + ' live');
    const gone = st.members.length - st.live;
    text('members-sub', gone > 0 ? gone + ' gone' : 'none gone');
    text('generation', shortGen(st.generation));
    const lastPlan = st.timeline.length ? st.timeline[st.timeline.length - 1] : null;
    text('plan-kind', lastPlan ? lastPlan.kind + ' plan' : 'no plan yet');
    if (st.last_checkpoint) {
      const c = st.last_checkpoint;
      text('ckpt', c.position.phase + ':' + c.position.step);
      text('ckpt-sub', fmtBytes(c.bytes) + ' in ' + fmtSeconds(c.seconds) + ' · ' + st.checkpoints + ' total');
      $('ckpt').title = c.name;
    } else {
      text('ckpt', '–');
      text('ckpt-sub', 'none yet');
    }
    renderPhases(st);
    renderMembers(st);
    renderSamples(st);
    renderTimeline(st);
    drawLoss(st);
    text('updated', new Date(st.updated).toLocaleTimeString());
  }

  function renderPhases(st) {
    const box = $('phases');
    box.replaceChildren();
    for (const ph of st.phases) {
      const d = el('div', 'phase ' + ph.state);
      d.dataset.phase = String(ph.index);
      d.dataset.state = ph.state;
      d.append(el('div', '', (ph.index + 1) + '. ' + ph.name));
      const bar = el('progress');
      bar.max = ph.steps;
      bar.value = ph.state === 'done' ? ph.steps : (ph.state === 'running' ? st.position.step : 0);
      d.append(bar);
      box.append(d);
    }
  }

  function renderMembers(st) {
    const ring = st.ring.length ? 'ring: ' + st.ring.join(' → ') + ' → ' + st.ring[0] : 'no ring yet';
    text('ring', ring);
    const body = $('member-rows');
    body.replaceChildren();
    for (const m of st.members) {
      const tr = el('tr');
      tr.dataset.memberRow = '';
      tr.dataset.memberId = m.id;
      tr.dataset.state = m.state;
      const live = m.state === 'live';
      tr.append(el('td', '', m.id));
      const state = el('td', 'state ' + m.state, m.state);
      if (!live && m.reason) state.title = m.reason;
      tr.append(state);
      tr.append(el('td', '', m.rank >= 0 ? String(m.rank) : '–'));
      tr.append(el('td', '', m.shards.length ? m.shards.join(',') : '–'));
      const reported = !!m.last_report;
      tr.append(el('td', '', reported ? m.position.phase + ':' + m.position.step : '–'));
      tr.append(el('td', '', reported ? fmt(m.loss) : '–'));
      tr.append(el('td', '', reported ? fmtInt(m.samples_per_sec) : '–'));
      tr.append(el('td', '', reported ? fmtSeconds(m.step_seconds) : '–'));
      tr.append(el('td', '', reported ? (100 * m.allreduce_fraction).toFixed(0) + '%' : '–'));
      tr.append(el('td', '', reported ? fmtBytes(m.allreduce_mb_total * 1e6) : '–'));
      tr.append(el('td', '', live ? since(m.last_report) : 'left ' + since(m.left) + (m.reason ? ': ' + m.reason : '')));
      body.append(tr);
    }
  }

  function renderSamples(st) {
    const img = $('samples-img');
    if (!st.samples) {
      img.hidden = true;
      return;
    }
    if (img.dataset.version !== String(st.samples.version)) {
      img.src = st.samples.url;
      img.dataset.version = String(st.samples.version);
    }
    img.hidden = false;
    text('samples-caption', st.samples.caption);
  }

  function renderTimeline(st) {
    const ol = $('timeline');
    ol.replaceChildren();
    const shown = st.timeline.slice(-40).reverse();
    ol.start = st.timeline.length;
    for (const e of shown) {
      const li = el('li');
      li.append(el('span', 'kind ' + e.kind, e.kind));
      let s = 'gen ' + shortGen(e.generation) + ' · ' + new Date(e.time).toLocaleTimeString() + ' · ' + (e.members.length ? e.members.join(', ') : 'no members');
      if (e.kind === 'run' && e.start) s += ' · from ' + e.start.phase + ':' + e.start.step + ' (' + e.source + ')';
      li.append(document.createTextNode(s));
      if (e.reason) li.append(el('div', 'muted', e.reason));
      ol.append(li);
    }
  }

  // drawLoss draws every phase's curve over its steps, one colour each,
  // on a log scale when the losses are positive and span more than 10x.
  function drawLoss(st) {
    const canvas = $('loss-canvas');
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(300, canvas.clientWidth), h = Math.max(200, canvas.clientHeight);
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const curves = st.loss_curves.filter((c) => c.steps.length > 0);
    let points = 0, lo = Infinity, hi = -Infinity;
    for (const c of curves) {
      for (const v of c.loss) {
        if (v === null) continue;
        lo = Math.min(lo, v); hi = Math.max(hi, v);
      }
    }
    const legend = $('loss-legend');
    legend.replaceChildren();
    const m = { l: 64, r: 14, t: 12, b: 34 };
    ctx.font = '12px system-ui, sans-serif';
    ctx.fillStyle = '#68717c';
    ctx.strokeStyle = '#dde1e6';
    ctx.lineWidth = 1;
    if (!isFinite(lo)) {
      ctx.fillText('no loss reported yet', m.l, h / 2);
      canvas.dataset.lossPoints = '0';
      return;
    }
    const logY = lo > 0 && hi / lo > 10;
    const ty = (v) => logY ? Math.log10(v) : v;
    let y0 = ty(lo), y1 = ty(hi);
    if (y1 - y0 < 1e-12) { y0 -= 0.5; y1 += 0.5; }
    const pad = (y1 - y0) * 0.05;
    y0 -= pad; y1 += pad;
    const xMax = Math.max(1, st.steps_per_phase);
    const X = (s) => m.l + (w - m.l - m.r) * s / xMax;
    const Y = (v) => h - m.b - (h - m.t - m.b) * (ty(v) - y0) / (y1 - y0);
    // Grid and ticks.
    ctx.beginPath();
    for (const t of ticks(y0, y1, logY)) {
      const y = h - m.b - (h - m.t - m.b) * (t.at - y0) / (y1 - y0);
      ctx.moveTo(m.l, y); ctx.lineTo(w - m.r, y);
      ctx.fillText(t.label, 4, y + 4);
    }
    for (const t of ticks(0, xMax, false)) {
      const x = X(t.at);
      ctx.moveTo(x, m.t); ctx.lineTo(x, h - m.b);
      ctx.fillText(t.label, x - 10, h - m.b + 16);
    }
    ctx.stroke();
    ctx.fillText('step' + (logY ? ' · loss on a log scale' : ''), w - m.r - 160, h - 4);
    for (const c of curves) {
      const color = colors[c.phase % colors.length];
      ctx.strokeStyle = color;
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      let pen = false;
      for (let i = 0; i < c.steps.length; i++) {
        const v = c.loss[i];
        if (v === null || (logY && v <= 0)) { pen = false; continue; }
        const x = X(c.steps[i]), y = Y(v);
        if (pen) ctx.lineTo(x, y); else ctx.moveTo(x, y);
        pen = true;
        points++;
      }
      ctx.stroke();
      const item = el('span');
      const sw = el('span', 'swatch');
      sw.style.background = color;
      item.append(sw, document.createTextNode((c.phase + 1) + '. ' + c.name));
      legend.append(item);
    }
    canvas.dataset.lossPoints = String(points);
  }

  // ticks returns about 5 round tick positions over [lo, hi] (exponents
  // when log).
  function ticks(lo, hi, log) {
    const out = [];
    if (log) {
      for (let e = Math.ceil(lo); e <= Math.floor(hi); e++) out.push({ at: e, label: '1e' + e });
      if (out.length >= 2) return out;
    }
    const span = hi - lo;
    const raw = span / 5;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((k) => k * mag).find((s) => span / s <= 6) || raw;
    for (let t = Math.ceil(lo / step) * step; t <= hi + 1e-9 * span; t += step) {
      const v = log ? Math.pow(10, t) : t;
      out.push({ at: t, label: Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(1) : String(+v.toPrecision(4)) });
    }
    return out;
  }

  function setConn(s) { text('conn', s); }

  function connect() {
    const es = new EventSource('/events');
    es.addEventListener('status', (ev) => {
      try { render(JSON.parse(ev.data)); } catch (err) { setConn('bad update: ' + err); }
    });
    es.onopen = () => setConn('live');
    es.onerror = () => setConn(last && last.state === 'done' ? 'run finished; server gone' : 'reconnecting…');
  }

  fetch('/api/status').then((r) => r.json()).then((st) => { if (!last) render(st); }).catch(() => {});
  connect();
  window.addEventListener('resize', () => { if (last) drawLoss(last); });
  // Keep "last report … ago" fresh between updates.
  setInterval(() => { if (last) renderMembers(last); }, 5000);
})();

// Generations are (coordinator start in unix seconds) << 20 + a counter,
// so they keep rising across coordinator restarts; people read the
// counter. The full number stays in data-generation.
function shortGen(g) {
  return String(g % 1048576);
}

// transferd's dashboard: a single page over the JSON API (/api/v1/, see
// docs/api.md). No framework and no inline script (the page's
// Content-Security-Policy forbids it); text is always set with textContent.
'use strict';

(() => {
  // ---- API ------------------------------------------------------------------
  const tokenKey = 'transferd.token';
  const token = () => sessionStorage.getItem(tokenKey) || '';

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;  // HTTP status, 0 when the server is unreachable
      this.code = code;      // gRPC code name ("NOT_FOUND")
    }
  }

  function headers(extra) {
    const h = Object.assign({}, extra || {});
    if (token()) h.Authorization = 'Bearer ' + token();
    return h;
  }

  async function api(method, path, body) {
    const init = { method, headers: headers(), cache: 'no-store' };
    if (body instanceof FormData) {
      init.body = body;
    } else if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers['Content-Type'] = 'application/json';
    }
    let res;
    try {
      res = await fetch('/api/v1/' + path, init);
    } catch (e) {
      throw new ApiError(0, 'UNAVAILABLE', 'The server cannot be reached (stopped, or the network is down).');
    }
    let json = null;
    try { json = await res.json(); } catch (e) { /* not JSON */ }
    if (!res.ok) {
      const err = json && json.error ? json.error : {};
      throw new ApiError(res.status, err.status || String(res.status), err.message || res.statusText);
    }
    return json;
  }

  // A plain-words message for an API error.
  function explain(e) {
    if (!(e instanceof ApiError)) return String(e && e.message || e);
    if (e.status === 0) return e.message;
    if (e.status === 401) return 'Not signed in: enter a valid token above (' + e.message + ').';
    if (e.status === 403) return 'No permission: ' + e.message;
    return e.message + ' (' + e.code + ')';
  }

  // ---- DOM helpers ------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }
  const SVG = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'text') node.textContent = v; else node.setAttribute(k, v);
    }
    for (const c of children.flat()) if (c) node.append(c);
    return node;
  }
  const main = () => document.getElementById('main');

  function banner(message, kind) {
    const b = document.getElementById('banner');
    b.textContent = message || '';
    b.className = 'banner' + (kind ? ' ' + kind : '');
    b.hidden = !message;
  }

  const short = (name) => String(name || '').replace(/^[a-z]+\//, '');
  const stateName = (s) => String(s || '').replace(/^JOB_STATE_/, '');
  const kindName = (k) => String(k || '').replace(/^JOB_KIND_/, '').replace('_', '-').toLowerCase();
  const pct = (x) => (100 * Number(x || 0)).toFixed(1) + '%';
  const num = (x, d) => Number(x || 0).toFixed(d === undefined ? 3 : d);
  function when(ts) {
    if (!ts) return '';
    const d = new Date(ts);
    return isNaN(d) || d.getTime() <= 0 ? '' : d.toLocaleString();
  }
  function duration(s) {
    s = Math.max(0, Math.round(Number(s || 0)));
    const h = Math.floor(s / 3600), m = Math.floor(s % 3600 / 60), r = s % 60;
    return (h ? h + 'h ' : '') + (h || m ? m + 'm ' : '') + r + 's';
  }
  const finished = (state) => ['SUCCEEDED', 'FAILED', 'CANCELLED'].includes(stateName(state));

  // ---- Server summary ---------------------------------------------------------
  async function loadServer() {
    const box = document.getElementById('server');
    try {
      const info = await api('GET', 'server');
      const d = info.device || {};
      const mem = Number(d.memory_bytes || 0);
      box.replaceChildren(
        el('span', { class: 'chip', id: 'server-version' }, 'transferd ' + info.version),
        el('span', { class: 'chip', id: 'server-device' },
          'device ' + (d.name || '?') + (d.description ? ' (' + d.description + ')' : '')),
        el('span', { class: 'chip' }, (d.threads || '?') + ' threads'),
        mem ? el('span', { class: 'chip hide-narrow' }, (mem / 2 ** 30).toFixed(1) + ' GiB') : null,
        el('span', { class: 'chip hide-narrow' },
          'precision ' + String(d.default_precision || '').replace('PRECISION_', '').toLowerCase()),
        el('span', { class: 'chip hide-narrow' }, 'LibTorch ' + (info.build || {}).torch_version),
        el('span', { class: 'chip hide-narrow' }, 'up since ' + when(info.start_time)));
      return true;
    } catch (e) {
      box.replaceChildren(el('span', { class: 'chip' }, 'server: ' + explain(e)));
      banner(explain(e));
      return false;
    }
  }

  // ---- Jobs list -----------------------------------------------------------------
  // The list refreshes itself every 5 s while it is shown (and the tab
  // visible); the job view follows its job's event stream instead.
  let refreshTimer = null;
  let lastJobs = '';

  async function viewJobs() {
    const root = el('div', {}, el('h2', {}, 'Jobs'));
    let page;
    try {
      page = await api('GET', 'jobs?page_size=100');
    } catch (e) {
      main().replaceChildren(root);
      root.append(el('p', { class: 'error' }, explain(e)));
      return;
    }
    const route = location.hash.replace(/^#\/?/, '');
    if (route !== '' && route !== 'jobs') return;  // navigated away meanwhile
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(viewJobs, 5000);
    const snapshot = JSON.stringify(page.jobs || []);
    if (snapshot === lastJobs && document.getElementById('jobs-table')) return;  // unchanged
    lastJobs = snapshot;
    // Keyboard focus survives a refresh: the same row's same control.
    const focused = document.activeElement && document.activeElement.closest
      ? document.activeElement.closest('tr[data-job]') : null;
    const focusKey = focused ? [focused.dataset.job, document.activeElement.tagName] : null;
    main().replaceChildren(root);
    const jobs = page.jobs || [];
    if (!jobs.length) {
      root.append(el('p', { class: 'muted' },
        'No jobs yet. Start one with transferctl train, or POST /api/v1/jobs.'));
      return;
    }
    const rows = jobs.map((j) => {
      const state = stateName(j.state);
      const p = j.progress || {};
      const cancel = finished(j.state) ? null : el('button', {
        class: 'danger', type: 'button', 'aria-label': 'Cancel job ' + short(j.name),
        onclick: async (ev) => {
          ev.target.disabled = true;
          try {
            await api('POST', 'jobs/' + short(j.name) + ':cancel');
            banner('Cancelled ' + short(j.name) + '.', 'info');
          } catch (e) { banner(explain(e)); }
          viewJobs();
        },
      }, 'Cancel');
      return el('tr', { 'data-job': short(j.name) },
        el('td', {}, el('a', { href: '#/jobs/' + short(j.name) }, short(j.name))),
        el('td', {}, kindName(j.spec && j.spec.kind)),
        el('td', {}, el('span', { class: 'state state-' + state }, state.toLowerCase())),
        el('td', { class: 'hide-narrow' }, short(j.spec && j.spec.dataset)),
        el('td', {}, state === 'RUNNING' && p.epochs
          ? 'epoch ' + p.epoch + '/' + p.epochs + (p.stages > 1 ? ', stage ' + (p.stage + 1) + '/' + p.stages : '')
          : (j.failure_reason || '')),
        el('td', { class: 'hide-narrow' }, when(j.create_time)),
        el('td', {}, cancel));
    });
    root.append(el('div', { class: 'card scroll' }, el('table', { id: 'jobs-table' },
      el('thead', {}, el('tr', {}, ['Job', 'Kind', 'State', 'Dataset', 'Progress', 'Created', ''].map(
        (h, i) => el('th', { class: i === 3 || i === 5 ? 'hide-narrow' : null, scope: 'col' }, h)))),
      el('tbody', {}, rows))));
    if (focusKey) {
      const again = root.querySelector(`tr[data-job="${CSS.escape(focusKey[0])}"] ${focusKey[1].toLowerCase()}`);
      if (again) again.focus();
    }
  }

  // ---- Curves ----------------------------------------------------------------------
  // Points: one per epoch across stages; `boundaries`: indexes where a new
  // stage starts (the fine-tuning).
  function chart(title, history, key, valKey, boundaries, percent) {
    const W = 560, H = 260, L = 48, R = 12, T = 14, B = 32;
    const xs = history.map((_, i) => i + 1);
    const ys = history.flatMap((e) => [e[key], e[valKey]]).filter((v) => v !== undefined && v !== null).map(Number);
    let lo = ys.length ? Math.min(...ys) : 0, hi = ys.length ? Math.max(...ys) : 1;
    if (percent) { lo = Math.min(lo, 0.5); hi = 1; }
    if (hi - lo < 1e-6) { hi += 0.5; lo -= 0.5; }
    const pad = (hi - lo) * 0.06; lo -= pad; hi += percent ? 0 : pad;
    if (percent) lo = Math.max(0, lo);
    const n = Math.max(2, xs.length);
    const X = (i) => L + (W - L - R) * (i - 1) / (n - 1);
    const Y = (v) => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
    const g = svg('g', {});
    for (let k = 0; k <= 4; k++) {
      const v = lo + (hi - lo) * k / 4;
      g.append(svg('line', { class: 'gridline', x1: L, x2: W - R, y1: Y(v), y2: Y(v) }));
      g.append(svg('text', { x: L - 6, y: Y(v) + 4, 'text-anchor': 'end', text: percent ? (100 * v).toFixed(0) + '%' : v.toFixed(2) }));
    }
    g.append(svg('line', { class: 'axis', x1: L, x2: W - R, y1: H - B, y2: H - B }));
    g.append(svg('line', { class: 'axis', x1: L, x2: L, y1: T, y2: H - B }));
    const step = Math.max(1, Math.ceil(n / 10));
    for (let i = 1; i <= xs.length; i += step) {
      g.append(svg('text', { x: X(i), y: H - B + 16, 'text-anchor': 'middle', text: String(i) }));
    }
    g.append(svg('text', { x: (L + W - R) / 2, y: H - 2, 'text-anchor': 'middle', text: 'epoch' }));
    for (const b of boundaries) {
      const x = (X(b) + X(b + 1)) / 2;
      g.append(svg('line', { class: 'stage', x1: x, x2: x, y1: T, y2: H - B }));
      g.append(svg('text', { class: 'stage-label', x: x + 4, y: T + 10, text: 'fine-tuning' }));
    }
    for (const [k, cls] of [[key, 'train'], [valKey, 'val']]) {
      const pts = history.map((e, i) => [i + 1, e[k]]).filter(([, v]) => v !== undefined && v !== null);
      if (!pts.length) continue;
      g.append(svg('polyline', { class: 'line-' + cls, points: pts.map(([i, v]) => X(i) + ',' + Y(Number(v))).join(' ') }));
      for (const [i, v] of pts) {
        g.append(svg('circle', { class: 'pt-' + cls, cx: X(i), cy: Y(Number(v)), r: 3 },
          svg('title', { text: 'epoch ' + i + ': ' + (percent ? pct(v) : num(v)) })));
      }
    }
    return el('figure', { class: 'card chart', 'data-chart': key },
      el('figcaption', {}, el('strong', {}, title), ' ',
        el('span', { class: 'legend' }, el('span', { class: 'k-train' }, '— train'), '  ',
          el('span', { class: 'k-val' }, '- - validation'))),
      svg('svg', { viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': title + ' per epoch' }, g));
  }

  function boundariesOf(history) {
    const out = [];
    for (let i = 1; i < history.length; i++) if (history[i].stage !== history[i - 1].stage) out.push(i);
    return out;
  }

  function matrixView(ev) {
    const cm = ev.confusion_matrix || {};
    const classes = cm.classes || [];
    const counts = (cm.counts || []).map(Number);
    const k = classes.length;
    const box = el('div', { class: 'card evaluation', 'data-split': ev.split },
      el('h3', {}, 'Evaluation on ' + ev.split),
      el('p', {}, 'accuracy ', el('strong', { class: 'eval-accuracy' }, pct(ev.accuracy)),
        ', loss ' + num(ev.loss) + ', ' + ev.examples + ' images',
        Number(ev.top_k) ? ', top-' + ev.top_k + ' ' + pct(ev.top_k_accuracy) : '',
        Number(ev.roc_auc) ? ', ROC AUC ' + num(ev.roc_auc) : ''));
    if (k > 2) {
      box.append(el('p', { class: 'muted' }, 'macro accuracy ' + pct(ev.macro_accuracy || 0) +
        ', GAP ' + num(ev.gap || 0)));
    }
    if (k && k <= 10 && counts.length === k * k) {
      box.append(el('div', { class: 'scroll' }, el('table', { class: 'matrix' },
        el('caption', { class: 'muted' }, 'rows: true class, columns: predicted'),
        el('thead', {}, el('tr', {}, el('th', {}, ''), classes.map((c) => el('th', { scope: 'col' }, c)))),
        el('tbody', {}, classes.map((c, r) => el('tr', {}, el('th', { scope: 'row' }, c),
          classes.map((_, col) => el('td', { class: r === col ? 'diag' : null }, String(counts[r * k + col])))))))));
    } else if ((ev.top_confusions || []).length) {
      const pairs = ev.top_confusions.map((c) => [Number(c.count), c.true_label, c.predicted_label]);
      box.append(el('p', { class: 'muted' }, k + ' classes: the most frequent confusions'),
        el('table', { class: 'confusions' }, el('thead', {}, el('tr', {},
          el('th', {}, 'true'), el('th', {}, 'predicted as'), el('th', {}, 'images'))),
        el('tbody', {}, pairs.slice(0, 15).map(([n, t, p]) => el('tr', {}, el('td', {}, t), el('td', {}, p), el('td', {}, String(n)))))));
    }
    return box;
  }

  // ---- Event stream (SSE over fetch, so the token goes in a header) ---------------
  function follow(jobId, after, onEvent, onStatus) {
    const ctl = new AbortController();
    let last = after, stopped = false, delay = 1000;
    async function run() {
      while (!stopped) {
        try {
          const res = await fetch('/api/v1/jobs/' + encodeURIComponent(jobId) + '/events',
            { headers: headers({ 'Last-Event-ID': String(last), Accept: 'text/event-stream' }), signal: ctl.signal, cache: 'no-store' });
          if (!res.ok) {
            let msg = res.statusText;
            try { msg = (await res.json()).error.message; } catch (e) { /* keep */ }
            throw new ApiError(res.status, '', msg);
          }
          onStatus('');
          delay = 1000;
          const reader = res.body.getReader();
          const dec = new TextDecoder();
          let buf = '';
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buf += dec.decode(value, { stream: true });
            let cut;
            while ((cut = buf.indexOf('\n\n')) >= 0) {
              const block = buf.slice(0, cut); buf = buf.slice(cut + 2);
              let id = null, type = 'message', data = '';
              for (const line of block.split('\n')) {
                if (line.startsWith('id: ')) id = line.slice(4);
                else if (line.startsWith('event: ')) type = line.slice(7);
                else if (line.startsWith('data: ')) data += line.slice(6);
              }
              if (type === 'job_event') {
                last = Number(id);
                onEvent(JSON.parse(data));
              } else if (type === 'end') {
                stopped = true;
              } else if (type === 'error') {
                throw new ApiError(500, '', JSON.parse(data).error.message);
              }
            }
          }
          if (!stopped) throw new ApiError(0, '', 'the event stream closed');
        } catch (e) {
          if (stopped || ctl.signal.aborted) return;
          onStatus(e.status === 401 || e.status === 403 ? explain(e)
            : 'Live updates interrupted (' + (e.message || e) + '); reconnecting…');
          if (e.status === 401 || e.status === 403 || e.status === 404) return;
          await new Promise((r) => setTimeout(r, delay));
          delay = Math.min(delay * 2, 15000);
        }
      }
    }
    run();
    return () => { stopped = true; ctl.abort(); };
  }

  // ---- Job view ---------------------------------------------------------------------
  let stopFollowing = null;

  async function viewJob(id) {
    const root = el('div', { id: 'job-view' }, el('h2', {}, 'Job ', el('span', { id: 'job-id' }, id)));
    main().replaceChildren(root);
    let job;
    try {
      job = await api('GET', 'jobs/' + encodeURIComponent(id));
    } catch (e) {
      root.append(el('p', { class: 'error' }, explain(e)));
      return;
    }
    const history = job.history || [];
    const evaluations = job.evaluations || [];
    const summary = el('div', { class: 'card' });
    const progressText = el('p', { id: 'progress-text', 'aria-live': 'polite' });
    const bar = el('div', {});
    const progress = el('div', { class: 'card', id: 'progress' }, el('h3', {}, 'Progress'),
      el('div', { class: 'progress', role: 'progressbar', 'aria-label': 'step progress' }, bar), progressText);
    const charts = el('div', { class: 'grid2', id: 'charts' });
    const evals = el('div', { id: 'evaluations' });
    const live = el('p', { class: 'muted', id: 'live', 'aria-live': 'polite' });
    root.append(el('div', { class: 'grid2' }, summary, progress), charts, evals, live);

    function renderSummary() {
      const state = stateName(job.state);
      const spec = job.resolved_spec && job.resolved_spec.model ? job.resolved_spec : job.spec || {};
      const model = spec.model || {};
      const cancel = finished(job.state) ? null : el('button', { class: 'danger', type: 'button', id: 'cancel-job',
        onclick: async (ev) => {
          ev.target.disabled = true;
          try { job = Object.assign(job, await api('POST', 'jobs/' + encodeURIComponent(id) + ':cancel')); renderSummary(); }
          catch (e) { banner(explain(e)); ev.target.disabled = false; }
        } }, 'Cancel job');
      summary.replaceChildren(el('dl', { class: 'kv' },
        el('dt', {}, 'state'), el('dd', {}, el('span', { class: 'state state-' + state, id: 'job-state' }, state.toLowerCase()),
          job.failure_reason ? ' — ' + job.failure_reason : ''),
        el('dt', {}, 'kind'), el('dd', {}, kindName(spec.kind)),
        el('dt', {}, 'dataset'), el('dd', {}, short(spec.dataset)),
        el('dt', {}, 'model'), el('dd', {}, [model.backbone, model.input_size ? model.input_size + ' px' : ''].filter(Boolean).join(', ')),
        job.result_model ? [el('dt', {}, 'result'), el('dd', {}, el('a', { href: '#/predict/' + encodeURIComponent(job.result_model), id: 'job-result' }, short(job.result_model)))] : null,
        el('dt', {}, 'created'), el('dd', {}, when(job.create_time))), ...(cancel ? [cancel] : []));
    }
    function renderCharts() {
      const b = boundariesOf(history);
      charts.replaceChildren(
        chart('Loss', history, 'loss', 'val_loss', b, false),
        chart('Accuracy', history, 'accuracy', 'val_accuracy', b, true));
    }
    // `p`: the job's progress (ETA to the end of the job) or a step event
    // over it (ETA to the end of the epoch).
    function renderProgress(p, epochEta) {
      if (finished(job.state)) {
        bar.style.width = stateName(job.state) === 'SUCCEEDED' ? '100%' : bar.style.width;
        progressText.textContent = 'Finished: ' + stateName(job.state).toLowerCase() + (history.length ? ', ' + history.length + ' epochs' : '');
        return;
      }
      if (!p || !Number(p.steps)) {
        progressText.textContent = stateName(job.state) === 'QUEUED' ? 'Queued.' : 'Starting…';
        return;
      }
      bar.style.width = (100 * Number(p.step) / Number(p.steps)).toFixed(1) + '%';
      const stage = p.stages > 1 || p.stage > 0 ? 'stage ' + (Number(p.stage) + 1) + (p.stages ? '/' + p.stages : '') + ' · ' : '';
      progressText.textContent = stage + 'epoch ' + p.epoch + (p.epochs ? '/' + p.epochs : '') +
        ' · step ' + p.step + '/' + p.steps +
        (Number(p.eta_seconds) > 0 ? ' · ETA ' + duration(p.eta_seconds) + (epochEta ? ' (this epoch)' : '') : '') +
        (Number(p.images_per_second) > 0 ? ' · ' + num(p.images_per_second, 1) + ' images/s' : '');
    }
    function renderEvals() { evals.replaceChildren(...evaluations.map(matrixView)); }

    renderSummary(); renderCharts(); renderProgress(job.progress); renderEvals();
    if (stopFollowing) stopFollowing();
    stopFollowing = follow(id, Number(job.last_event_sequence || 0), (e) => {
      if (e.epoch_end) { history.push(e.epoch_end); renderCharts(); }
      else if (e.step) { renderProgress(Object.assign({}, job.progress || {}, e.step), true); }
      else if (e.evaluation) { evaluations.push(e.evaluation); renderEvals(); }
      else if (e.state_changed) {
        job.state = e.state_changed.state;
        if (e.state_changed.message && stateName(job.state) === 'FAILED') job.failure_reason = e.state_changed.message;
        renderSummary(); renderProgress(job.progress);
        // Finished: the job's record names the result model and the
        // matrices' classes (events carry the counts only).
        if (finished(job.state)) {
          api('GET', 'jobs/' + encodeURIComponent(id)).then((j) => {
            job = j;
            evaluations.splice(0, evaluations.length, ...(j.evaluations || []));
            renderSummary(); renderEvals();
          }, (err) => { live.textContent = explain(err); });
        }
      } else if (e.stage_started) { job.progress = Object.assign(job.progress || {}, { stage: e.stage_started.stage }); }
    }, (status) => { live.textContent = status; });
    if (finished(job.state)) live.textContent = '';
  }

  // ---- Models ------------------------------------------------------------------------
  async function viewModels() {
    const root = el('div', {}, el('h2', {}, 'Models'));
    main().replaceChildren(root);
    let models, aliases;
    try {
      [models, aliases] = await Promise.all([api('GET', 'models?page_size=100'), api('GET', 'aliases?page_size=100')]);
    } catch (e) { root.append(el('p', { class: 'error' }, explain(e))); return; }
    const list = models.models || [];
    if (!list.length) { root.append(el('p', { class: 'muted' }, 'No models yet: a training job that succeeds registers one.')); return; }
    const byModel = {};
    for (const a of aliases.aliases || []) (byModel[a.model] = byModel[a.model] || []).push(short(a.name));
    root.append(el('div', { class: 'card scroll' }, el('table', { id: 'models-table' },
      el('thead', {}, el('tr', {}, ['Model', 'Aliases', 'Backbone', 'Classes', 'Val. accuracy', 'From job', ''].map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, list.map((m) => {
        // Listings are lean (no history, no class names): the validation
        // evaluation of the kept weights, and the class count.
        const validation = (m.evaluations || []).find((e) => e.split === 'validation');
        const best = validation ? Number(validation.accuracy || 0) : 0;
        const count = Number(m.class_count || 0);
        return el('tr', { 'data-model': short(m.name) },
          el('td', {}, short(m.name), m.display_name ? el('div', { class: 'muted' }, m.display_name) : null),
          el('td', {}, (byModel[m.name] || []).map((a) => el('span', { class: 'alias' }, a))),
          el('td', {}, (m.spec && m.spec.model && m.spec.model.backbone) || ''),
          el('td', {}, count ? count + ' classes' : ''),
          el('td', {}, best ? pct(best) : ''),
          el('td', {}, m.source_job ? el('a', { href: '#/jobs/' + short(m.source_job) }, short(m.source_job)) : ''),
          el('td', {}, el('a', { href: '#/predict/' + encodeURIComponent(m.name) }, 'Predict')));
      })))));
  }

  // ---- Datasets -------------------------------------------------------------------
  async function viewDatasets() {
    const root = el('div', {}, el('h2', {}, 'Datasets'));
    main().replaceChildren(root);
    let page;
    try { page = await api('GET', 'datasets?page_size=100'); }
    catch (e) { root.append(el('p', { class: 'error' }, explain(e))); return; }
    const list = page.datasets || [];
    if (!list.length) { root.append(el('p', { class: 'muted' }, 'No datasets: upload one with transferctl datasets upload DIR.')); return; }
    root.append(el('div', { class: 'card scroll' }, el('table', {},
      el('thead', {}, el('tr', {}, ['Dataset', 'Classes', 'Files', 'Size', 'Created'].map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, list.map((d) => el('tr', {},
        el('td', {}, short(d.name)),
        el('td', {}, (d.classes || []).length > 4 ? d.classes.length + ' classes' : (d.classes || []).join(', ')),
        el('td', {}, String(d.files)),
        el('td', {}, (Number(d.bytes) / 2 ** 20).toFixed(1) + ' MiB'),
        el('td', {}, when(d.create_time))))))));
  }

  // ---- Predict -------------------------------------------------------------------
  async function viewPredict(preselect) {
    const root = el('div', { id: 'predict-view' }, el('h2', {}, 'Predict'));
    main().replaceChildren(root);
    let models, aliases;
    try {
      [models, aliases] = await Promise.all([api('GET', 'models?page_size=100'), api('GET', 'aliases?page_size=100')]);
    } catch (e) { root.append(el('p', { class: 'error' }, explain(e))); return; }
    const options = [
      ...(aliases.aliases || []).map((a) => [a.name, 'alias ' + short(a.name) + ' → ' + short(a.model)]),
      ...(models.models || []).map((m) => [m.name, short(m.name) + (m.display_name ? ' (' + m.display_name + ')' : '')]),
    ];
    if (!options.length) { root.append(el('p', { class: 'muted' }, 'No models to predict with yet.')); return; }
    const select = el('select', { id: 'predict-model' }, options.map(([v, t]) => el('option', { value: v, selected: v === preselect }, t)));
    const tta = el('input', { type: 'checkbox', id: 'predict-tta' });
    const input = el('input', { type: 'file', id: 'predict-files', accept: 'image/jpeg,image/png,image/*', multiple: true });
    const drop = el('label', { class: 'drop', for: 'predict-files' }, 'Drop images here, or choose files', input);
    const results = el('div', { class: 'results', id: 'predict-results', 'aria-live': 'polite' });
    const status = el('p', { class: 'muted', id: 'predict-status', role: 'status' });

    async function run(files) {
      files = Array.from(files || []);
      if (!files.length) return;
      banner('');
      status.textContent = 'Classifying ' + files.length + ' image' + (files.length > 1 ? 's' : '') + '…';
      const form = new FormData();
      if (tta.checked) form.append('horizontal_flip_tta', 'true');
      files.forEach((f) => form.append('image', f, f.name));
      const path = select.value + ':predict';
      let answer;
      try {
        answer = await api('POST', path, form);
      } catch (e) {
        status.textContent = '';
        banner(explain(e));
        return;
      }
      status.textContent = 'Answered by ' + short(answer.model) + '.';
      results.replaceChildren(...(answer.predictions || []).map((p, i) => {
        const ok = !p.status || !Number(p.status.code);
        // The picture only for images the server could read.
        let img = null;
        if (ok) {
          img = el('img', { alt: files[i].name });
          img.src = URL.createObjectURL(files[i]);
          img.addEventListener('load', () => URL.revokeObjectURL(img.src), { once: true });
        }
        const scores = (p.scores || []).slice().sort((a, b) => b.probability - a.probability).slice(0, 5);
        return el('div', { class: 'card prediction', 'data-image': p.id }, img,
          el('div', { class: 'muted' }, p.id),
          ok ? el('div', { class: 'label' }, p.label) : el('div', { class: 'error' }, 'Not classified: ' + p.status.message),
          ok ? scores.map((s) => {
            const fill = el('div', { class: 'fill' });
            fill.style.width = (100 * s.probability).toFixed(1) + '%';
            return el('div', { class: 'bar' }, el('span', {}, s.label), el('div', { class: 'track' }, fill), el('span', {}, pct(s.probability)));
          }) : null);
      }));
    }

    input.addEventListener('change', () => run(input.files));
    for (const t of ['dragenter', 'dragover']) drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add('over'); });
    for (const t of ['dragleave', 'drop']) drop.addEventListener(t, () => drop.classList.remove('over'));
    drop.addEventListener('drop', (e) => { e.preventDefault(); run(e.dataTransfer.files); });
    root.append(el('div', { class: 'predict-form' },
      el('label', {}, 'Model or alias', select),
      el('label', {}, el('span', {}, tta, ' mirror-image averaging (TTA)'))),
    drop, status, results);
  }

  // ---- Router ----------------------------------------------------------------------
  async function route() {
    if (stopFollowing) { stopFollowing(); stopFollowing = null; }
    clearTimeout(refreshTimer);
    lastJobs = '';
    const parts = (location.hash.replace(/^#\/?/, '') || 'jobs').split('/');
    const section = parts[0];
    for (const a of document.querySelectorAll('.top nav a')) {
      if (a.id === 'nav-' + section) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
    }
    if (section === 'jobs' && parts[1]) return viewJob(decodeURIComponent(parts[1]));
    if (section === 'models') return viewModels();
    if (section === 'predict') return viewPredict(parts[1] ? decodeURIComponent(parts.slice(1).join('/')) : '');
    if (section === 'datasets') return viewDatasets();
    return viewJobs();
  }

  document.addEventListener('DOMContentLoaded', () => {
    const input = document.getElementById('token');
    input.value = token();
    document.getElementById('token-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      if (input.value) sessionStorage.setItem(tokenKey, input.value.trim()); else sessionStorage.removeItem(tokenKey);
      banner('');
      if (await loadServer()) route();
    });
    window.addEventListener('hashchange', () => { banner(''); route(); });
    loadServer().then(() => route());
  });
})();

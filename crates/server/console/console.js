// The wasmagent console: runs code through the public API and shows the run report. No framework, no innerHTML:
// everything a run produced is put in the page as text nodes, except HTML, SVG and Markdown artifacts, which are
// shown in sandboxed frames (/console/frame) that can reach neither this page nor the network.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const el = (tag, text) => {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    return node;
  };

  const MIN_CARD_HEIGHT = 20;
  const MAX_CARD_HEIGHT = 2000;
  const IMAGE_TYPES = ['image/png', 'image/jpeg', 'image/gif', 'image/webp'];
  const EXAMPLES = {
    js: [
      '// Artifacts: display.html, svg, markdown, table, json, image(bytes, mime).',
      "const runs = [['Mon', 3], ['Tue', 7], ['Wed', 5], ['Thu', 9], ['Fri', 4]];",
      'const bars = runs.map(([day, n], i) =>',
      '  `<rect x="${20 + i * 50}" y="${110 - n * 10}" width="36" height="${n * 10}" fill="#2d6cdf"/>` +',
      '  `<text x="${38 + i * 50}" y="128" font-size="12" text-anchor="middle">${day}</text>`).join("");',
      'display.svg(`<svg xmlns="http://www.w3.org/2000/svg" width="280" height="135">${bars}</svg>`, "Runs per day");',
      "display.table(runs.map(([day, n]) => ({ day, runs: n })), 'Runs');",
      "console.log('total', runs.reduce((s, [, n]) => s + n, 0));",
      'runs.length',
    ].join('\n'),
    python: [
      'from wasmagent import display',
      '',
      'runs = {"Mon": 3, "Tue": 7, "Wed": 5}',
      'display.markdown("**Busiest day:** " + max(runs, key=runs.get))',
      'display.table([{"day": d, "runs": n} for d, n in runs.items()], title="Runs")',
      'sum(runs.values())',
    ].join('\n'),
  };

  const code = $('code');
  const language = $('language');
  const manifest = $('manifest');
  const manifestError = $('manifest-error');
  const runError = $('run-error');
  const runButton = $('run');
  const token = $('token');
  const history = [];
  // Card frames by their window: only messages from these are read, and only as a height or a ready signal.
  const cardFrames = new Map();

  token.value = sessionStorage.getItem('wasmagent.token') || '';
  token.addEventListener('change', () => sessionStorage.setItem('wasmagent.token', token.value.trim()));
  code.value = EXAMPLES.js;
  language.addEventListener('change', () => {
    if (Object.values(EXAMPLES).includes(code.value) || code.value.trim() === '') code.value = EXAMPLES[language.value];
  });

  function headers(contentType) {
    const h = { 'Content-Type': contentType };
    const t = token.value.trim();
    if (t) h.Authorization = 'Bearer ' + t;
    return h;
  }

  async function api(path, contentType, body) {
    const response = await fetch(path, { method: 'POST', headers: headers(contentType), body, credentials: 'omit' });
    let json = null;
    try { json = await response.json(); } catch (e) { json = null; }
    return { ok: response.ok, status: response.status, json };
  }

  function describe(result) {
    const body = result.json || {};
    const field = body.field ? ' (field ' + body.field + ')' : '';
    return 'HTTP ' + result.status + (body.error ? ' ' + body.error : '') + field + ': ' + (body.message || 'no message');
  }

  function showError(node, text) {
    node.textContent = text || '';
    node.hidden = !text;
  }

  // The manifest as the API takes it, or null after showing why it is not valid. An empty editor is no manifest.
  async function checkManifest() {
    const text = manifest.value;
    if (text.trim() === '') {
      manifest.removeAttribute('aria-invalid');
      showError(manifestError, '');
      return { manifest: undefined };
    }
    const result = await api('/v1/manifests/check', 'text/plain; charset=utf-8', text);
    if (!result.ok) {
      manifest.setAttribute('aria-invalid', 'true');
      showError(manifestError, describe(result));
      return null;
    }
    manifest.removeAttribute('aria-invalid');
    showError(manifestError, '');
    return { manifest: result.json.manifest };
  }

  let checkTimer = 0;
  manifest.addEventListener('input', () => {
    clearTimeout(checkTimer);
    checkTimer = setTimeout(checkManifest, 400);
  });

  async function run() {
    if (runButton.disabled) return;
    runButton.disabled = true;
    showError(runError, '');
    try {
      const checked = await checkManifest();
      if (checked === null) return;
      const request = { language: language.value, code: code.value };
      if (checked.manifest !== undefined) request.manifest = checked.manifest;
      const started = performance.now();
      const result = await api('/v1/runs', 'application/json', JSON.stringify(request));
      if (!result.ok || !result.json) {
        showError(runError, describe(result));
        return;
      }
      const entry = { n: history.length + 1, language: language.value, report: result.json,
                      ms: performance.now() - started };
      history.push(entry);
      addHistory(entry);
      render(entry.report);
    } catch (e) {
      showError(runError, 'the request failed: ' + e);
    } finally {
      runButton.disabled = false;
    }
  }

  runButton.addEventListener('click', run);
  document.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      run();
    }
  });

  function addHistory(entry) {
    const item = el('li');
    const button = el('button', '#' + entry.n + ' ' + entry.language + ' · ' + entry.report.outcome + ' · ' +
      Number(entry.report.usage && entry.report.usage.wall_ms || 0).toFixed(1) + ' ms');
    button.type = 'button';
    button.addEventListener('click', () => render(entry.report));
    item.appendChild(button);
    $('history').prepend(item);
  }

  function fillRows(tableId, rows) {
    const body = $(tableId).tBodies[0];
    body.replaceChildren();
    for (const cells of rows) {
      const tr = el('tr');
      for (const cell of cells) tr.appendChild(el('td', cell === null || cell === undefined ? '' : String(cell)));
      body.appendChild(tr);
    }
  }

  function render(report) {
    const outcome = $('outcome');
    outcome.textContent = String(report.outcome);
    outcome.dataset.outcome = String(report.outcome);
    const usage = report.usage || {};
    $('summary').textContent = report.kernel + ' kernel · ' + Number(usage.wall_ms || 0).toFixed(2) + ' ms';
    $('value').textContent = JSON.stringify(report.value, null, 2);
    $('error-box').hidden = !report.error;
    $('error').textContent = report.error ? report.error.kind + ': ' + report.error.message : '';
    $('stdout').textContent = report.stdout || '';
    $('stderr').textContent = report.stderr || '';
    fillRows('denials', (report.denials || []).map((d) => [d.capability, d.target, d.reason]));
    fillRows('tool-calls', (report.tool_calls || []).map((c) => [c.name, c.outcome, c.duration_ms, c.error]));
    fillRows('http-requests', (report.http_requests || []).map((r) =>
      [r.method, r.url, r.outcome, r.status, r.response_bytes, r.duration_ms]));
    fillRows('usage', Object.entries(usage).map(([k, v]) => [k, v]));
    renderArtifacts(report.artifacts || []);
  }

  function renderArtifacts(artifacts) {
    const cards = $('artifacts');
    for (const frame of cards.querySelectorAll('iframe')) cardFrames.delete(frame.contentWindow);
    cards.replaceChildren();
    if (artifacts.length === 0) cards.appendChild(el('p', 'none'));
    artifacts.forEach((artifact, i) => {
      const card = el('figure');
      card.className = 'card';
      card.dataset.kind = String(artifact.kind);
      const caption = [artifact.title, artifact.kind, artifact.bytes + ' bytes'].filter(Boolean).join(' · ');
      card.appendChild(el('figcaption', '#' + (i + 1) + ' ' + caption));
      cards.appendChild(card);
      try {
        show(card, artifact);
      } catch (e) {
        card.appendChild(el('pre', 'cannot show this artifact: ' + e));
      }
    });
  }

  function show(card, artifact) {
    const text = typeof artifact.text === 'string' ? artifact.text : '';
    switch (artifact.kind) {
      case 'html':
      case 'svg':
        frameCard(card, text);
        break;
      case 'markdown':
        api('/v1/render/markdown', 'text/markdown; charset=utf-8', text).then((result) => {
          if (result.ok && result.json && typeof result.json.html === 'string') frameCard(card, result.json.html);
          else card.appendChild(el('pre', text));
        });
        break;
      case 'table':
        card.appendChild(tableOf(JSON.parse(text)));
        break;
      case 'json':
        card.appendChild(el('pre', JSON.stringify(JSON.parse(text), null, 2)));
        break;
      case 'image':
        if (!IMAGE_TYPES.includes(artifact.mime) || typeof artifact.base64 !== 'string' ||
            !/^[A-Za-z0-9+/]*={0,2}$/.test(artifact.base64)) {
          card.appendChild(el('pre', 'not a PNG, JPEG, GIF or WebP image'));
          break;
        }
        {
          const img = el('img');
          img.alt = artifact.title || 'image';
          img.src = 'data:' + artifact.mime + ';base64,' + artifact.base64;
          card.appendChild(img);
        }
        break;
      default:
        card.appendChild(el('pre', text));
    }
  }

  function frameCard(card, html) {
    const frame = el('iframe');
    frame.setAttribute('sandbox', 'allow-scripts');
    frame.setAttribute('referrerpolicy', 'no-referrer');
    frame.setAttribute('title', card.dataset.kind + ' artifact');
    frame.src = '/console/frame';
    card.appendChild(frame);
    cardFrames.set(frame.contentWindow, { frame, html, sent: false });
  }

  function tableOf(rows) {
    const wrap = el('div');
    wrap.className = 'table-wrap';
    const table = el('table');
    const cell = (v) => (typeof v === 'string' ? v : JSON.stringify(v));
    const objects = rows.length > 0 && rows.every((r) => r !== null && typeof r === 'object' && !Array.isArray(r));
    if (objects) {
      const columns = [];
      for (const row of rows) for (const key of Object.keys(row)) if (!columns.includes(key)) columns.push(key);
      const head = el('tr');
      for (const column of columns) head.appendChild(el('th', column));
      table.appendChild(el('thead')).appendChild(head);
      const body = table.appendChild(el('tbody'));
      for (const row of rows) {
        const tr = body.appendChild(el('tr'));
        for (const column of columns) tr.appendChild(el('td', column in row ? cell(row[column]) : ''));
      }
    } else {
      const body = table.appendChild(el('tbody'));
      for (const row of rows) {
        const tr = body.appendChild(el('tr'));
        for (const value of Array.isArray(row) ? row : [row]) tr.appendChild(el('td', cell(value)));
      }
    }
    wrap.appendChild(table);
    return wrap;
  }

  window.addEventListener('message', (event) => {
    const card = cardFrames.get(event.source);
    if (card === undefined) return;
    const data = event.data;
    if (data === null || typeof data !== 'object') return;
    if (data.wasmagentFrame === 'ready' && !card.sent) {
      card.sent = true;
      // The frame's origin is opaque, so no target origin can name it; `event.source` is the frame itself.
      event.source.postMessage({ html: card.html }, '*');
      return;
    }
    const height = data.wasmagentHeight;
    if (typeof height === 'number' && Number.isFinite(height)) {
      const clamped = Math.min(MAX_CARD_HEIGHT, Math.max(MIN_CARD_HEIGHT, Math.ceil(height)));
      card.frame.style.height = clamped + 'px';
    }
  });
})();

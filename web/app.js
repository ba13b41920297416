// lookalike web page: search by image, browse the catalogue, watch recent jobs.
// Plain DOM, no build step. Everything from the API is put on the page as text, never as HTML.
'use strict';

(() => {
  const PAGE = 24;
  const KEY_STORE = 'lookalike.apiKey';
  const $ = (id) => document.getElementById(id);

  const state = {
    last: null, // the last search: {kind: 'file', file} | {kind: 'url', url} | {kind: 'item', id, label, thumb}
    box: null, // the region of a file or URL query to search with: "x,y,w,h" (fractions), or null
    // Results marked "more like this" / "less like this": item id -> name. While any is marked the
    // page asks POST /v1/recommend instead of the query above.
    marks: { positive: new Map(), negative: new Map() },
    seq: 0, // only the newest search may draw its answer
    preview: null, // object URL of the dropped file
    catalogue: { category: '', offset: 0, total: 0 },
    jobsTimer: null,
  };

  // ---- helpers ------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(code, message, status) {
      super(message);
      this.code = code;
      this.status = status;
    }
  }

  // The API key lives in this browser's localStorage only, and goes out in the Authorization header
  // (never in a URL, which would land in logs and history).
  function apiKey() {
    try {
      return localStorage.getItem(KEY_STORE) || '';
    } catch (_) {
      return '';
    }
  }

  function authHeaders(headers) {
    const key = apiKey();
    return key ? { ...(headers || {}), authorization: `Bearer ${key}` } : { ...(headers || {}) };
  }

  /** Calls the API; resolves to the JSON body, or throws an ApiError with the API's code and message. */
  async function api(path, options) {
    let res;
    try {
      res = await fetch(path, { ...(options || {}), headers: authHeaders(options && options.headers) });
    } catch (e) {
      throw new ApiError('network', 'The service did not answer. Is it running?', 0);
    }
    const text = await res.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch (_) {
      body = null;
    }
    if (!res.ok) {
      const err = (body && body.error) || {};
      let message = err.message || `${res.status} ${res.statusText}`;
      if (res.status === 401) {
        message += apiKey() ? ' Check the API key at the top of the page.' : ' Enter an API key at the top of the page.';
        $('api-key').setAttribute('aria-invalid', 'true');
      }
      throw new ApiError(err.code || `http_${res.status}`, message, res.status);
    }
    return body;
  }

  /**
   * Shows a thumbnail. An <img src> cannot send the API key, so the image is fetched with it and shown
   * from a blob URL, released once the image has been decoded. Only the newest request for an <img> wins.
   */
  async function loadThumb(img, path) {
    img.dataset.thumb = path || '';
    img.removeAttribute('src');
    if (!path) return;
    try {
      const res = await fetch(path, { headers: authHeaders() });
      if (!res.ok) throw new Error(`${res.status}`);
      const blob = await res.blob();
      if (img.dataset.thumb !== path) return;
      const url = URL.createObjectURL(blob);
      const release = () => URL.revokeObjectURL(url);
      img.addEventListener('load', release, { once: true });
      img.addEventListener('error', release, { once: true });
      img.src = url;
    } catch (_) {
      // A missing thumbnail leaves an empty frame; the card still names the item.
    }
  }

  /** h('li', {class: 'x', dataset: {a: 1}}, child, 'text') */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'dataset') Object.assign(el.dataset, value);
      else if (key === 'text') el.textContent = value;
      else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
      else el.setAttribute(key, value === true ? '' : value);
    }
    for (const child of children.flat()) {
      if (child !== null && child !== undefined && child !== false) el.append(child);
    }
    return el;
  }

  const pct = (x) => (typeof x !== 'number' ? '' : x > 0 && x < 0.005 ? '<1%' : `${Math.round(x * 100)}%`);
  const shortId = (id) => (id ? String(id).slice(0, 8) : '');

  function showError(context, e) {
    const box = $('error');
    const code = e && e.code ? e.code : 'error';
    const message = e && e.message ? e.message : String(e);
    box.replaceChildren(
      h('strong', { text: `${context}: ` }),
      h('span', { text: message }),
      ' ',
      h('code', { text: code }),
      h('button', { type: 'button', class: 'close', 'aria-label': 'Dismiss', text: '×', onclick: clearError }),
    );
    box.hidden = false;
  }

  function clearError() {
    $('error').hidden = true;
    $('error').replaceChildren();
  }

  // ---- views --------------------------------------------------------------------------------

  function route() {
    const view = (location.hash.match(/^#\/(\w+)/) || [])[1] || 'search';
    const known = ['search', 'catalogue', 'jobs'].includes(view) ? view : 'search';
    for (const name of ['search', 'catalogue', 'jobs']) {
      $(`view-${name}`).hidden = name !== known;
      const tab = $(`tab-${name}`);
      if (name === known) tab.setAttribute('aria-current', 'page');
      else tab.removeAttribute('aria-current');
    }
    clearTimeout(state.jobsTimer);
    if (known === 'catalogue') loadCatalogue();
    if (known === 'jobs') loadJobs();
  }

  // ---- categories ---------------------------------------------------------------------------

  async function loadCategories() {
    let body;
    try {
      body = await api('/v1/categories');
    } catch (e) {
      showError('Could not load categories', e);
      return;
    }
    const categories = (body && body.categories) || [];
    const filter = $('category-filter');
    const chosen = filter.value;
    filter.replaceChildren(
      h('option', { value: 'auto', text: 'auto (predicted)' }),
      h('option', { value: 'any', text: 'any category' }),
      ...categories.map((c) => h('option', { value: c.name, text: `${c.name} (${c.items})` })),
    );
    filter.value = [...filter.options].some((o) => o.value === chosen) ? chosen : 'auto';

    const pick = $('catalogue-category');
    const current = state.catalogue.category;
    pick.replaceChildren(...categories.map((c) => h('option', { value: c.name, text: `${c.name} (${c.items})` })));
    if (!categories.length) pick.append(h('option', { value: '', text: 'no categories yet' }));
    pick.value = categories.some((c) => c.name === current) ? current : (categories[0] ? categories[0].name : '');
  }

  // ---- search -------------------------------------------------------------------------------

  function setQueryPreview(query) {
    const img = $('query-image');
    let src = null;
    if (query.kind === 'file') {
      if (state.preview) URL.revokeObjectURL(state.preview);
      state.preview = URL.createObjectURL(query.file);
      src = state.preview;
    } else if (query.kind === 'url') {
      src = query.url;
    }
    img.onerror = () => {
      img.hidden = true;
    };
    if (query.kind === 'item') {
      img.hidden = !query.thumb;
      loadThumb(img, query.thumb);
    } else {
      img.dataset.thumb = '';
      img.hidden = !src;
      if (src) img.src = src;
    }
    $('query-label').textContent =
      query.kind === 'file' ? `Your image: ${query.file.name || 'pasted image'}`
        : query.kind === 'url' ? `Image at ${query.url}`
          : `Similar to ${query.label}`;
  }

  /** The filters box as a query string to append (`&brand=acme`), or '' when empty. */
  function filterQuery() {
    const raw = $('filters').value.trim().replace(/^[?&]+/, '');
    return raw ? `&${raw}` : '';
  }

  function marked() {
    return state.marks.positive.size + state.marks.negative.size > 0;
  }

  function showMarks() {
    const { positive, negative } = state.marks;
    const names = (m) => [...m.values()].join(', ');
    const parts = [];
    if (positive.size) parts.push(`more like ${names(positive)}`);
    if (negative.size) parts.push(`less like ${names(negative)}`);
    $('feedback-text').textContent = parts.length ? `Showing items ${parts.join('; ')}.` : '';
    $('feedback').hidden = !parts.length;
  }

  /** Draws the search box over the query image, from the "x,y,w,h" fractions. */
  function drawBox() {
    const box = $('box');
    const img = $('query-image');
    const boxable = !!state.last && (state.last.kind === 'file' || state.last.kind === 'url');
    $('query-frame').classList.toggle('boxable', boxable);
    $('box-hint').hidden = !boxable;
    $('box-clear').hidden = !state.box;
    if (!state.box || img.hidden) {
      box.hidden = true;
      return;
    }
    const [x, y, w, h] = state.box.split(',').map(Number);
    Object.assign(box.style, {
      left: `${x * img.clientWidth}px`,
      top: `${y * img.clientHeight}px`,
      width: `${w * img.clientWidth}px`,
      height: `${h * img.clientHeight}px`,
    });
    box.hidden = false;
  }

  async function runSearch(query) {
    state.last = query;
    const seq = ++state.seq;
    const category = $('category-filter').value;
    const k = $('k').value;
    const grouping = $('grouping').value;
    // The API's two ways of grouping: by product (`group`), or near-duplicates (`collapse`).
    const group = grouping === 'product' ? 'product' : 'none';
    const collapse = grouping === 'duplicates';
    const filters = filterQuery();
    clearError();
    setQueryPreview(query);
    drawBox();
    showMarks();
    // Nothing from the previous answer stays on screen while this one is on its way.
    $('predicted-category').textContent = '…';
    $('predicted-confidence').hidden = true;
    $('prediction-top').replaceChildren();
    $('search-scope').textContent = '';
    $('search-scope').classList.remove('warn');
    $('query').hidden = false;
    $('results').setAttribute('aria-busy', 'true');
    $('search-status').textContent = 'Searching…';
    try {
      let body;
      const search = `/v1/search?${filters.slice(1)}`;
      if (marked()) {
        // More like the marked results (and the item searched from), less like the others.
        const positive = [...state.marks.positive.keys()];
        if (query.kind === 'item' && !state.marks.negative.has(query.id) && !positive.includes(query.id)) positive.push(query.id);
        if (!positive.length) throw new ApiError('no_positive', 'Mark at least one result "more like this".', 0);
        body = await api(`/v1/recommend?${filters.slice(1)}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ positive, negative: [...state.marks.negative.keys()], k: Number(k), category }),
        });
      } else if (query.kind === 'file') {
        const form = new FormData();
        form.append('file', query.file, query.file.name || 'image');
        form.append('k', k);
        form.append('category', category);
        form.append('group', group);
        if (collapse) form.append('collapse', 'true');
        if (state.box) form.append('box', state.box);
        body = await api(search, { method: 'POST', body: form });
      } else if (query.kind === 'url') {
        body = await api(search, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ url: query.url, k: Number(k), category, group, collapse, ...(state.box ? { box: state.box } : {}) }),
        });
      } else {
        const params = new URLSearchParams({ k, category, group, collapse });
        body = await api(`/v1/items/${encodeURIComponent(query.id)}/similar?${params}${filters}`);
      }
      if (seq !== state.seq) return;
      renderSearch(query, body || {});
    } catch (e) {
      if (seq !== state.seq) return;
      showError('Search failed', e);
      $('query').hidden = true;
      $('results').replaceChildren();
      $('results').removeAttribute('data-query');
      $('search-status').textContent = '';
    } finally {
      if (seq === state.seq) $('results').removeAttribute('aria-busy');
    }
  }

  function renderSearch(query, body) {
    const prediction = body.prediction;
    const label = $('predicted-category').previousElementSibling;
    if (prediction) {
      label.textContent = 'Predicted category';
      $('predicted-category').textContent = prediction.category || 'unknown';
      $('predicted-confidence').textContent = pct(prediction.confidence);
      $('predicted-confidence').hidden = typeof prediction.confidence !== 'number';
      $('prediction-top').replaceChildren(
        ...(prediction.top || []).slice(0, 3).map((t) =>
          h('li', {},
            h('span', { class: 'top-name', text: t.category }),
            h('span', { class: 'bar', 'aria-hidden': 'true' }, h('span', { style: `width:${Math.round((t.confidence || 0) * 100)}%` })),
            h('span', { class: 'top-pct', text: pct(t.confidence) }))),
      );
    } else {
      // Similar to a stored item: its own category stands in for a prediction.
      const q = body.query || {};
      label.textContent = 'Item category';
      $('predicted-category').textContent = q.category || 'uncategorised';
      $('predicted-confidence').textContent = '';
      $('predicted-confidence').hidden = true;
      $('prediction-top').replaceChildren();
    }

    const search = body.search || {};
    const cats = search.categories && search.categories.length ? search.categories.join(', ') : null;
    const scope = $('search-scope');
    scope.classList.toggle('warn', !!search.low_confidence);
    if (search.low_confidence) {
      scope.textContent = `Low confidence: searched across ${cats || 'all categories'}`;
    } else if (search.mode === 'any' || !cats) {
      scope.textContent = 'Searched all categories';
    } else if (search.mode === 'category') {
      scope.textContent = `Searched within ${cats} (chosen)`;
    } else {
      scope.textContent = `Searched within ${cats}`;
    }

    const results = body.results || [];
    const grid = $('results');
    grid.replaceChildren(...results.map(resultCard));
    grid.dataset.query = query.kind === 'item' ? `item:${query.id}` : query.kind;
    $('search-status').textContent = results.length
      ? `${results.length} similar ${search.group === 'product' ? 'product' : 'item'}${results.length === 1 ? '' : 's'}${search.group === 'duplicates' ? ', near-duplicates collapsed' : ''}. Choose one to search from it.`
      : 'No similar items found.';
    if (body.added && body.added.item_id) {
      $('search-status').textContent += ` Added as item ${shortId(body.added.item_id)}.`;
    }
  }

  function itemName(external, id) {
    return external || `item ${shortId(id)}`;
  }

  function card(cls, { id, external, category, thumb, extra }) {
    const name = itemName(external, id);
    return h('li', { class: cls, dataset: { itemId: id, category: category || '' } },
      h('button', {
        type: 'button',
        class: 'card',
        title: `Find items similar to ${name}`,
        onclick: () => {
          if (location.hash !== '#/search') {
            location.hash = '#/search';
            route();
          }
          newQuery();
          runSearch({ kind: 'item', id, label: name, thumb });
          $('query').scrollIntoView({ block: 'nearest' });
        },
      },
      thumbnail(thumb, name),
      h('span', { class: 'meta' },
        h('span', { class: 'name', text: name }),
        h('span', { class: 'row-meta' },
          h('span', { class: category ? 'cat' : 'cat none', text: category || 'uncategorised' }),
          extra))));
  }

  function thumbnail(path, alt) {
    const img = h('img', { alt, width: 160, height: 160 });
    loadThumb(img, path);
    return img;
  }

  function resultCard(r) {
    const li = card('result', {
      id: r.item_id,
      external: r.external_id,
      category: r.category,
      thumb: r.thumbnail_url,
      extra: h('span', { class: 'score', title: 'similarity', text: typeof r.score === 'number' ? r.score.toFixed(3) : '' }),
    });
    const name = itemName(r.external_id, r.item_id);
    if (r.product_id) {
      // Grouped answers say how many of the product's images matched, out of how many it has.
      const images = typeof r.product_images === 'number' ? r.product_images : null;
      const matched = typeof r.matched_images === 'number' ? r.matched_images : null;
      const text = images === null ? `product ${r.product_id}`
        : `product ${r.product_id} · ${images} image${images === 1 ? '' : 's'}${matched !== null && images > 1 ? `, ${matched} matched` : ''}`;
      li.querySelector('.meta').append(h('span', { class: 'product', title: 'product', text }));
    }
    if (typeof r.duplicates_matched === 'number' && r.duplicates_matched > 1) {
      li.querySelector('.meta').append(h('span', { class: 'product', title: 'near-duplicate copies among the matches', text: `${r.duplicates_matched} near-duplicate copies` }));
    }
    const mark = (side, other, cls, text, what) => h('button', {
      type: 'button',
      class: cls,
      'aria-pressed': state.marks[side].has(r.item_id) ? 'true' : 'false',
      'aria-label': `${what}: ${name}`,
      title: `${what}: ${name}`,
      text,
      onclick: () => {
        if (state.marks[side].has(r.item_id)) state.marks[side].delete(r.item_id);
        else {
          state.marks[side].set(r.item_id, name);
          state.marks[other].delete(r.item_id);
        }
        if (state.last) runSearch(state.last);
      },
    });
    li.append(h('span', { class: 'marks' },
      mark('positive', 'negative', 'more', '+ More', 'More like this'),
      mark('negative', 'positive', 'less', '− Less', 'Less like this')));
    return li;
  }

  // ---- catalogue ----------------------------------------------------------------------------

  async function loadCatalogue(scroll) {
    const category = $('catalogue-category').value;
    const grid = $('catalogue');
    if (!category) {
      grid.replaceChildren();
      $('catalogue-count').textContent = 'No categories yet.';
      return;
    }
    if (category !== state.catalogue.category) state.catalogue.offset = 0;
    state.catalogue.category = category;
    const { offset } = state.catalogue;
    grid.setAttribute('aria-busy', 'true');
    try {
      const params = new URLSearchParams({ category, limit: PAGE, offset });
      const body = await api(`/v1/items?${params}`);
      const items = (body && body.items) || [];
      const total = body && typeof body.total === 'number' ? body.total : offset + items.length;
      state.catalogue.total = total;
      grid.replaceChildren(...items.map((it) => card('item', {
        id: it.id,
        external: it.external_id,
        category: it.category,
        thumb: it.thumbnail_url,
        extra: it.category_source ? h('span', { class: 'source', text: it.category_source }) : null,
      })));
      $('catalogue-count').textContent = items.length
        ? `${offset + 1}–${offset + items.length} of ${total}`
        : 'No items in this category.';
      // The whole catalogue's near-duplicate groups (`dedupe`), from the status page.
      api('/v1/status').then((s) => {
        const d = s && s.duplicates;
        $('catalogue-duplicates').textContent = d
          ? `· ${d.groups} duplicate group${d.groups === 1 ? '' : 's'} (${d.items_in_groups} images)`
          : '';
      }).catch(() => { $('catalogue-duplicates').textContent = ''; });
      $('catalogue-prev').disabled = offset === 0;
      $('catalogue-next').disabled = offset + items.length >= total;
      $('catalogue-pager').hidden = offset === 0 && total <= items.length;
      if (scroll) $('view-catalogue').scrollIntoView({ block: 'start' });
    } catch (e) {
      showError('Could not load the catalogue', e);
    } finally {
      grid.removeAttribute('aria-busy');
    }
  }

  // ---- jobs ---------------------------------------------------------------------------------

  async function loadJobs() {
    clearTimeout(state.jobsTimer);
    const tbody = $('jobs').tBodies[0];
    let jobs;
    try {
      const body = await api('/v1/jobs?limit=20');
      jobs = (body && body.jobs) || [];
    } catch (e) {
      showError('Could not load jobs', e);
      return;
    }
    tbody.replaceChildren(...jobs.map(jobRow));
    if (!jobs.length) tbody.append(h('tr', {}, h('td', { colspan: 6, class: 'muted', text: 'No jobs yet.' })));
    // While something is still moving, look again shortly (only while the view is open).
    const active = jobs.some((j) => j.status === 'queued' || j.status === 'processing');
    if (active && !$('view-jobs').hidden) state.jobsTimer = setTimeout(loadJobs, 2000);
  }

  function jobRow(job) {
    const src = job.source || {};
    const source = src.kind === 'upload' ? `upload: ${src.file_name || '(file)'}` : (src.url || src.kind || '');
    const created = job.created_at ? new Date(job.created_at) : null;
    const err = job.error;
    return h('tr', { class: 'job', dataset: { jobId: job.id, status: job.status } },
      h('td', { title: job.created_at || '', text: created ? created.toLocaleString() : '' }),
      h('td', {}, h('span', { class: `status-badge ${job.status}`, text: job.status })),
      h('td', { class: 'source', title: source, text: source }),
      h('td', { text: job.external_id || '' }),
      h('td', { class: 'num', text: String(job.attempts ?? '') }),
      h('td', { class: 'job-error' }, err ? [h('code', { text: err.code }), ' ', h('span', { text: err.message || '' })] : ''));
  }

  // ---- wiring -------------------------------------------------------------------------------

  function searchFile(file) {
    if (!file) return;
    if (file.type && !file.type.startsWith('image/')) {
      showError('Not an image', new ApiError('unsupported_image_type', `${file.name} is ${file.type}, not an image`));
      return;
    }
    newQuery();
    runSearch({ kind: 'file', file });
  }

  function clearMarks() {
    state.marks.positive.clear();
    state.marks.negative.clear();
  }

  /** A new query: marks and a box made for the previous one mean nothing here. */
  function newQuery() {
    clearMarks();
    state.box = null;
  }

  /** Drag on a file or URL query's image to search with that part of it; searches on release. */
  function initBox() {
    const frame = $('query-frame');
    const img = $('query-image');
    let start = null;
    const at = (e) => {
      const r = img.getBoundingClientRect();
      return {
        x: Math.min(1, Math.max(0, (e.clientX - r.left) / r.width)),
        y: Math.min(1, Math.max(0, (e.clientY - r.top) / r.height)),
      };
    };
    const rect = (a, b) => [Math.min(a.x, b.x), Math.min(a.y, b.y), Math.abs(a.x - b.x), Math.abs(a.y - b.y)];
    frame.addEventListener('pointerdown', (e) => {
      if (!frame.classList.contains('boxable') || img.hidden) return;
      e.preventDefault();
      start = at(e);
      try {
        frame.setPointerCapture(e.pointerId);
      } catch (_) {
        // Without capture the drag still works while the pointer stays on the image.
      }
    });
    frame.addEventListener('pointermove', (e) => {
      if (!start) return;
      state.box = rect(start, at(e)).map((v) => v.toFixed(4)).join(',');
      drawBox();
    });
    frame.addEventListener('pointerup', (e) => {
      if (!start) return;
      const [x, y, w, h] = rect(start, at(e));
      start = null;
      // A click, or a sliver, is not a box.
      state.box = w * img.clientWidth >= 8 && h * img.clientHeight >= 8 ? [x, y, w, h].map((v) => v.toFixed(4)).join(',') : null;
      if (state.last) runSearch(state.last);
    });
    $('box-clear').addEventListener('click', () => {
      state.box = null;
      if (state.last) runSearch(state.last);
    });
    img.addEventListener('load', drawBox);
  }

  function searchUrl(raw) {
    const url = (raw || '').trim();
    if (!/^https?:\/\/\S+$/i.test(url)) {
      showError('Search failed', new ApiError('invalid_url', 'Enter an http(s) image URL, or choose a file'));
      return;
    }
    $('url').value = url;
    newQuery();
    runSearch({ kind: 'url', url });
  }

  function initKey() {
    const input = $('api-key');
    const showState = () => {
      $('key-state').textContent = apiKey() ? 'saved in this browser' : 'none';
    };
    input.value = apiKey();
    showState();
    $('key-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const key = input.value.trim();
      try {
        if (key) localStorage.setItem(KEY_STORE, key);
        else localStorage.removeItem(KEY_STORE);
      } catch (_) {
        showError('Could not keep the key', new ApiError('storage', 'This browser does not allow localStorage here'));
        return;
      }
      input.removeAttribute('aria-invalid');
      showState();
      clearError();
      // Everything on screen was fetched with the previous key: load it again with this one.
      loadCategories().then(() => {
        route();
        if (state.last) runSearch(state.last);
      });
    });
  }

  function init() {
    initKey();
    $('file').addEventListener('change', (e) => {
      const file = e.target.files && e.target.files[0];
      searchFile(file);
      e.target.value = ''; // choosing the same file again searches again
    });
    $('search-form').addEventListener('submit', (e) => {
      e.preventDefault();
      searchUrl($('url').value);
    });

    const drop = $('drop');
    for (const type of ['dragenter', 'dragover']) {
      drop.addEventListener(type, (e) => {
        e.preventDefault();
        drop.classList.add('over');
      });
    }
    for (const type of ['dragleave', 'drop']) drop.addEventListener(type, () => drop.classList.remove('over'));
    drop.addEventListener('drop', (e) => {
      e.preventDefault();
      const dt = e.dataTransfer;
      if (dt.files && dt.files.length) searchFile(dt.files[0]);
      else if (dt.getData('text/uri-list') || dt.getData('text/plain')) searchUrl((dt.getData('text/uri-list') || dt.getData('text/plain')).split('\n')[0]);
    });
    document.addEventListener('paste', (e) => {
      const items = [...(e.clipboardData ? e.clipboardData.items : [])];
      const image = items.find((i) => i.kind === 'file' && i.type.startsWith('image/'));
      if (image) {
        e.preventDefault();
        if (location.hash !== '#/search') {
          location.hash = '#/search';
          route();
        }
        searchFile(image.getAsFile());
      }
    });

    $('category-filter').addEventListener('change', () => state.last && runSearch(state.last));
    $('filters').addEventListener('change', () => state.last && runSearch(state.last));
    $('feedback-clear').addEventListener('click', () => {
      clearMarks();
      if (state.last) runSearch(state.last);
    });
    initBox();
    $('k').addEventListener('change', () => state.last && runSearch(state.last));
    $('grouping').addEventListener('change', () => state.last && runSearch(state.last));

    $('catalogue-category').addEventListener('change', () => loadCatalogue());
    $('catalogue-prev').addEventListener('click', () => {
      state.catalogue.offset = Math.max(0, state.catalogue.offset - PAGE);
      loadCatalogue(true);
    });
    $('catalogue-next').addEventListener('click', () => {
      state.catalogue.offset += PAGE;
      loadCatalogue(true);
    });
    $('jobs-refresh').addEventListener('click', () => loadJobs());

    window.addEventListener('hashchange', route);
    loadCategories().then(route);
  }

  init();
})();

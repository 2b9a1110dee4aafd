// The MsdFleet web UI: one page, no framework, talking to the same REST API as msdctl, with live
// updates over Server-Sent Events. State is reloaded whenever the event sequence shows a gap; otherwise an
// event changes only the rows and counters it is about.
import { chunkFile, frame } from './push.js';

const $ = (sel, root = document) => root.querySelector(sel);
const state = { csrf: null, user: null, role: null, images: [], agents: new Map(), rollouts: new Map(), progress: new Map(), lastSeq: null, source: null };

// ---- API ------------------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, problem) { super(problem?.detail || problem?.title || `HTTP ${status}`); this.status = status; this.code = problem?.code; }
}

async function api(method, url, body, { raw = false, contentType, signal, full = false } = {}) {
  const headers = {};
  if (method !== 'GET' && state.csrf) headers['X-CSRF-Token'] = state.csrf;
  let payload = body;
  if (body !== undefined && !raw) { headers['Content-Type'] = 'application/json'; payload = JSON.stringify(body); }
  if (contentType) headers['Content-Type'] = contentType;
  const res = await fetch(url, { method, headers, body: payload, credentials: 'same-origin', signal });
  if (res.status === 401 && !url.endsWith('/login')) { showLogin(); throw new ApiError(401, { detail: 'Your session has ended; log in again.' }); }
  const text = await res.text();
  const json = text ? (() => { try { return JSON.parse(text); } catch { return null; } })() : null;
  if (!res.ok) throw new ApiError(res.status, json);
  return full ? { json, headers: res.headers } : json;
}

// ---- formatting ---------------------------------------------------------------------------------
const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
function bytes(n) { if (n == null) return '–'; let i = 0; while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; } return `${n.toFixed(i ? 1 : 0)} ${units[i]}`; }
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v; else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'width') e.style.width = v; // through CSSOM: allowed by the page's style-src 'self'
    else if (k === 'dataset') Object.assign(e.dataset, v); else if (v !== false && v != null) e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) if (c != null) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}
function progressBar(done, total, label) {
  const pct = total > 0 ? Math.min(100, (100 * done) / total) : 0;
  return el('div', { class: 'progress', role: 'progressbar', 'aria-valuenow': pct.toFixed(0), 'aria-valuemin': '0', 'aria-valuemax': '100', title: label || '' },
    el('div', { class: 'bar', width: `${pct.toFixed(1)}%` }), el('span', {}, label ?? `${pct.toFixed(0)} %`));
}
const canOperate = () => state.role === 'operator' || state.role === 'admin';
const canAdmin = () => state.role === 'admin';

// ---- session ------------------------------------------------------------------------------------
function showLogin() {
  $('#login-view').hidden = false; $('#app-view').hidden = true; $('#logout').hidden = true; $('#docs-link').hidden = true;
  $('#who').textContent = '';
  state.source?.close(); state.source = null; setLive(false);
}
async function showApp(session) {
  state.csrf = session.csrfToken; state.user = session.user; state.role = session.role;
  $('#login-view').hidden = true; $('#app-view').hidden = false; $('#logout').hidden = false; $('#docs-link').hidden = false;
  $('#who').textContent = `${session.user} (${session.role})`;
  $('#dropzone').hidden = !canAdmin();
  connectEvents();
  await Promise.all([reloadAll(), route()]);
}
$('#login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const form = new FormData(ev.target);
  $('#login-error').textContent = '';
  try {
    const session = await api('POST', '/api/v1/session/login', { username: form.get('username'), password: form.get('password') });
    ev.target.reset();
    await showApp(session);
  } catch (e) { $('#login-error').textContent = e.message; }
});
$('#logout').addEventListener('click', async () => { try { await api('POST', '/api/v1/session/logout'); } finally { state.csrf = null; showLogin(); } });

// ---- live events --------------------------------------------------------------------------------
// An event changes only what it is about: an agent's row where it is shown, a rollout's row and page; the
// counters (one summary request) and the image list's "Used by" are refreshed at most every SUMMARY_MS.
function setLive(on, text) { const l = $('#live'); l.className = `live ${on ? 'on' : 'off'}`; l.textContent = text ?? (on ? 'live' : 'offline'); }
function connectEvents() {
  state.source?.close();
  // The browser resends Last-Event-ID by itself when it reconnects; the server then sends what we missed.
  const source = new EventSource('/api/v1/events');
  state.source = source;
  state.lastSeq = null; // a new stream (after a log-in) starts at the server's present; the caller reloads
  source.addEventListener('hello', (e) => {
    const hello = JSON.parse(e.data);
    setLive(true);
    if (state.lastSeq !== null && (hello.reset || hello.sequence < state.lastSeq)) reloadAll();
    if (state.lastSeq === null) state.lastSeq = hello.sequence;
  });
  const onEvent = (handler) => (e) => {
    const seq = Number(e.lastEventId);
    const gap = state.lastSeq !== null && seq !== state.lastSeq + 1;
    state.lastSeq = seq;
    if (gap) { reloadAll(); return; }
    handler(JSON.parse(e.data));
  };
  source.addEventListener('reset', onEvent(() => reloadAll()));
  source.addEventListener('agent', onEvent((agent) => {
    state.agents.set(agent.id, agent);
    updateAgentRow(agent.id);
    scheduleRefresh();
  }));
  source.addEventListener('image', onEvent(() => loadImages()));
  source.addEventListener('progress', onEvent((p) => {
    if (p.kind === 'PullProgress') state.progress.set(p.agentId, p); else state.progress.delete(p.agentId);
    updateAgentRow(p.agentId);
  }));
  source.addEventListener('rollout', onEvent((r) => upsertRollout(r)));
  source.onerror = () => setLive(false, 'reconnecting…');
}

const SUMMARY_MS = 750;
let refreshTimer = null;
function scheduleRefresh() {
  if (refreshTimer) return; // a throttle, not a debounce: a steady stream of events still refreshes the counters
  refreshTimer = setTimeout(() => { refreshTimer = null; loadSummary(); renderImages(); }, SUMMARY_MS);
}

// ---- data ---------------------------------------------------------------------------------------
async function reloadAll() { await Promise.all([loadImages(), loadFleet(), loadRollouts()]); }
async function loadImages() { state.images = await api('GET', '/api/v1/images'); renderImages(); }

// What "Used by" can show is what this page has seen: the agents of the pages it loaded and those events told
// it about. With thousands of agents the page does not hold the whole fleet.
function usersOf(image) {
  const users = [];
  for (const a of state.agents.values())
    for (const d of a.desired?.drives ?? [])
      if (d.image ? d.image === image.name : d.digest === image.digest) users.push(`${a.id}/${d.index}`);
  return users.sort();
}

function renderImages() {
  const body = $('#images tbody');
  body.replaceChildren(...state.images.map((img) => {
    const used = usersOf(img);
    const media = img.media ? [img.media.format, img.media.volumeLabel, img.media.bootUefi ? 'UEFI' : null, img.media.bootBios ? 'BIOS' : null, `→ ${img.media.suggestedMode}`].filter(Boolean).join(' · ') : '–';
    const shown = used.length > 10 ? `${used.slice(0, 10).join(', ')} and ${used.length - 10} more` : used.join(', ');
    return el('tr', { dataset: { image: img.name } },
      el('td', {}, img.name), el('td', {}, bytes(img.size)), el('td', {}, media),
      el('td', { class: 'mono', title: img.digest }, img.digest.slice(7, 19)),
      el('td', {}, used.length ? shown : '–'),
      el('td', {},
        canOperate() ? el('button', { class: 'small', onclick: () => openRollout(img) }, 'Roll out…') : null,
        canAdmin() ? el('button', { class: 'danger small', onclick: () => confirmDelete(img, used) }, 'Delete') : null));
  }));
}

function driveText(d, desired) {
  const want = desired?.drives?.find((x) => x.index === d.index);
  const name = want?.digest && want.digest === d.image ? want.image : d.image ? d.image.slice(7, 19) : 'empty';
  const parts = [`#${d.index}`, name];
  if (d.image) parts.push(d.mode ?? '', d.readOnly ? 'ro' : 'rw', d.connected ? 'connected' : 'disconnected');
  if (d.hostState) parts.push(`host: ${d.hostState}`);
  if (d.hostRead?.lastReadAt) parts.push(`· host read ${d.hostRead.bytesRead != null ? bytes(d.hostRead.bytesRead) + ', ' : ''}${ago(d.hostRead.lastReadAt)}`);
  if (d.workingCopy) parts.push(`· working copy${d.workingCopy.unsavedWrites ? ', unsaved writes' : ''}`);
  if (d.snapshot) parts.push(`· save as ${d.snapshot.image}: ${d.snapshot.state}${d.snapshot.error ? ' (' + d.snapshot.error + ')' : ''}`);
  return parts.filter(Boolean).join(' ');
}

function ago(iso) {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 90 ? `${s} s ago` : s < 5400 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
}

// ---- fleet table --------------------------------------------------------------------------------
// The fleet is never loaded whole: each list (the fleet, or one site when grouped) shows one page of at most
// PAGE_SIZE agents from GET /api/v1/agents, following the server's Link: rel="next" cursor. Counts come from
// GET /api/v1/fleet/summary with the same selector and search. A row on screen is found by id in `rows` so a
// live event replaces just that row.
const PAGE_SIZE = 100;
const FLEET_STATES = ['online', 'offline', 'drifted', 'failing', 'pulling'];
const fleet = { q: '', selector: '', states: new Set(), group: false, summary: null, lists: new Map(), rows: new Map(), generation: 0 };

function fleetParams(extraSelector) {
  const p = new URLSearchParams();
  const selector = [fleet.selector, extraSelector].filter(Boolean).join(',');
  if (selector) p.set('selector', selector);
  if (fleet.q) p.set('q', fleet.q);
  return p;
}
const siteSelector = (site) => (site === '' ? '!site' : `site=${site}`);
const siteName = (site) => (site === '' ? '(no site)' : site);

function showFleetError(e) {
  $('#fleet-error').textContent = e ? e.message : '';
  $('#fleet-selector').setAttribute('aria-invalid', e?.code === 'invalid-selector' ? 'true' : 'false');
}

async function loadFleet() {
  const generation = ++fleet.generation;
  fleet.lists.clear();
  fleet.rows.clear();
  try {
    const summary = await api('GET', `/api/v1/fleet/summary?${fleetParams()}`);
    if (generation !== fleet.generation) return;
    fleet.summary = summary;
    showFleetError(null);
  } catch (e) {
    if (generation !== fleet.generation) return;
    fleet.summary = null;
    showFleetError(e);
    renderChips();
    $('#fleet-lists').replaceChildren();
    return;
  }
  renderChips();
  const host = $('#fleet-lists');
  if (!fleet.group) {
    const list = newList('', null);
    host.replaceChildren(list.root);
    await loadPage(list, null);
    return;
  }
  host.replaceChildren(...Object.keys(fleet.summary.sites).map((site) => {
    const list = newList(site, siteSelector(site));
    const details = el('details', { class: 'site', dataset: { site } },
      el('summary', {}, el('strong', {}, siteName(site)), ' ', list.counts = el('span', { class: 'counts' })),
      list.root);
    details.addEventListener('toggle', () => { if (details.open && !list.loaded) loadPage(list, null); });
    list.details = details;
    renderSiteCounts(list);
    return details;
  }));
}

// Counters only: called on a (throttled) refresh after live events; rows stay as they are.
async function loadSummary() {
  const generation = fleet.generation;
  try {
    const summary = await api('GET', `/api/v1/fleet/summary?${fleetParams()}`);
    if (generation !== fleet.generation) return;
    fleet.summary = summary;
  } catch { return; } // the next event or reload tries again
  renderChips();
  for (const list of fleet.lists.values()) { if (list.site !== null) renderSiteCounts(list); renderPager(list); }
}

function countsText(counts) {
  return [`${counts.total} agents`, ...FLEET_STATES.filter((s) => counts[s] > 0).map((s) => `${counts[s]} ${s}`)].join(' · ');
}
function renderSiteCounts(list) {
  const counts = fleet.summary?.sites[list.site];
  if (counts) list.counts.textContent = countsText(counts);
  if (list.details) list.details.dataset.total = counts?.total ?? 0;
}

function renderChips() {
  const counts = fleet.summary?.counts;
  const chip = (value, label, count, pressed, onclick) => el('button', { type: 'button', class: 'chip', 'aria-pressed': pressed ? 'true' : 'false', dataset: { state: value }, onclick },
    label, ' ', el('span', { class: 'count' }, count ?? '–'));
  $('#fleet-chips').replaceChildren(
    chip('all', 'all', counts?.total, fleet.states.size === 0, () => { fleet.states.clear(); loadFleet(); }),
    ...FLEET_STATES.map((s) => chip(s, s, counts?.[s], fleet.states.has(s), () => {
      if (fleet.states.has(s)) fleet.states.delete(s); else fleet.states.add(s);
      loadFleet();
    })));
}

function newList(site, extraSelector) {
  const list = { site: fleet.group ? site : null, extra: extraSelector, ids: [], history: [], current: null, next: null, loaded: false, token: 0 };
  list.body = el('tbody');
  list.pager = el('div', { class: 'pager' });
  list.root = el('div', { class: 'fleet-list' },
    el('table', { class: 'agents' },
      el('thead', {}, el('tr', {}, ['Agent', 'Status', 'Labels', 'Drives', 'Cache', 'Transfers', 'Last error', ''].map((h) => el('th', {}, h)))),
      list.body),
    list.pager);
  fleet.lists.set(site, list);
  return list;
}

function firstPageUrl(list) {
  const p = fleetParams(list.extra);
  if (fleet.states.size) p.set('state', [...fleet.states].join(','));
  p.set('limit', PAGE_SIZE);
  return `/api/v1/agents?${p}`;
}

// url: a page to show (a Link the server gave), or null for the first.
async function loadPage(list, url, back = false) {
  const token = ++list.token;
  const target = url ?? firstPageUrl(list);
  try {
    const { json, headers } = await api('GET', target, undefined, { full: true });
    if (token !== list.token || fleet.lists.get(list.site ?? '') !== list) return; // a newer request or filter won
    if (url === null) list.history = [];
    else if (!back && list.current) list.history.push(list.current);
    list.current = target;
    list.next = /<([^>]+)>\s*;\s*rel="next"/.exec(headers.get('Link') ?? '')?.[1] ?? null;
    list.loaded = true;
    for (const id of list.ids) fleet.rows.delete(id);
    list.ids = json.map((a) => a.id);
    for (const a of json) state.agents.set(a.id, a);
    list.body.replaceChildren(...json.map((a) => { const tr = agentRow(a); fleet.rows.set(a.id, tr); return tr; }));
    if (json.length === 0) list.body.append(el('tr', { class: 'empty' }, el('td', { colspan: 8, class: 'hint' }, 'No agent matches.')));
    renderPager(list);
    renderImages();
  } catch (e) { if (token === list.token) showFleetError(e); }
}

function expectedTotal(list) {
  const counts = list.site === null ? fleet.summary?.counts : fleet.summary?.sites[list.site];
  if (!counts) return null;
  if (fleet.states.size === 0) return counts.total;
  return fleet.states.size === 1 ? counts[[...fleet.states][0]] : null; // states overlap: a sum would overcount
}

function renderPager(list) {
  if (!list.loaded) return;
  const first = list.history.length * PAGE_SIZE;
  const total = expectedTotal(list);
  const range = list.ids.length ? `${first + 1}–${first + list.ids.length}` : '0';
  list.pager.replaceChildren(
    el('button', { type: 'button', class: 'small', 'data-page': 'prev', disabled: list.history.length === 0,
      onclick: () => { const prev = list.history.pop(); loadPage(list, prev ?? null, true); } }, '← Previous'),
    el('span', { class: 'range' }, total != null ? `${range} of ${total}` : range),
    el('button', { type: 'button', class: 'small', 'data-page': 'next', disabled: !list.next, onclick: () => loadPage(list, list.next) }, 'Next →'));
}

function updateAgentRow(id) {
  const tr = fleet.rows.get(id);
  const agent = state.agents.get(id);
  if (!tr || !agent) return;
  const fresh = agentRow(agent);
  tr.replaceWith(fresh);
  fleet.rows.set(id, fresh);
}

function agentRow(a) {
  const transfers = (a.transfers ?? []).filter((t) => t.state !== 'done');
  const live = state.progress.get(a.id);
  const bars = live ? [progressBar(live.bytesDone, live.bytesTotal, `${bytes(live.bytesDone)} / ${bytes(live.bytesTotal)}`)]
    : transfers.map((t) => progressBar(t.bytesDone, t.bytesTotal, t.state === 'waiting'
      ? `waiting for its download window${t.resumesAt ? ` (opens ${new Date(t.resumesAt).toLocaleString()})` : ''} · ${bytes(t.bytesDone)} / ${bytes(t.bytesTotal)}`
      : `${t.state} ${bytes(t.bytesDone)} / ${bytes(t.bytesTotal)}`));
  const cacheUsed = (a.cache ?? []).reduce((s, c) => s + c.size, 0);
  const drives = (a.drives ?? []).map((d) => el('div', { class: 'drive', dataset: { drive: d.index, connected: d.connected, image: d.image ?? '' } },
    driveText(d, a.desired),
    canOperate() && (d.image || a.desired?.drives?.some((x) => x.index === d.index && x.image))
      ? el('button', { class: 'small', onclick: () => eject(a, d.index) }, 'Eject') : null,
    canOperate() && d.workingCopy ? el('button', { class: 'small', onclick: () => openSnapshot(a, d.index) }, 'Save…') : null,
    d.error ? el('span', { class: 'error' }, ` ${d.error}`) : null));
  return el('tr', { dataset: { agent: a.id, online: a.online, site: a.site ?? '' } },
    el('td', {}, a.id),
    el('td', {}, el('span', { class: `dot ${a.online ? 'on' : 'off'}` }), a.online ? 'online' : 'offline'),
    el('td', {}, Object.entries(a.labels ?? {}).map(([k, v]) => el('span', { class: 'label' }, `${k}=${v}`))),
    el('td', {}, drives.length ? drives : '–'),
    el('td', {}, a.totalBytes ? `${bytes(cacheUsed)} used, ${bytes(a.freeBytes)} free` : '–'),
    el('td', {}, bars.length ? bars : '–'),
    el('td', { class: 'error' }, a.lastError ?? ''),
    el('td', {}, canOperate() ? el('button', { onclick: () => openMount(a) }, 'Mount…') : null));
}

// Typing waits for a pause so 10,000 agents are not filtered once per key.
function debounce(fn, ms) { let t = null; return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); }; }
const refilter = debounce(() => { fleet.q = $('#fleet-q').value.trim(); fleet.selector = $('#fleet-selector').value.trim(); loadFleet(); }, 250);
$('#fleet-q').addEventListener('input', refilter);
$('#fleet-selector').addEventListener('input', refilter);
$('#fleet-group').addEventListener('change', (e) => { fleet.group = e.target.checked; loadFleet(); });

// ---- actions ------------------------------------------------------------------------------------
let mountTarget = null;
function openMount(agent) {
  mountTarget = agent;
  const form = $('#mount-form');
  $('#mount-agent').textContent = agent.id;
  $('#mount-error').textContent = '';
  const count = Math.max(1, agent.drives?.length ?? 1);
  form.drive.replaceChildren(...Array.from({ length: count }, (_, i) => el('option', { value: i }, `Drive ${i}`)));
  form.image.replaceChildren(...state.images.map((img) => el('option', { value: img.name, dataset: { mode: img.media?.suggestedMode ?? 'flash' } }, img.name)));
  const suggest = () => { const m = form.image.selectedOptions[0]?.dataset.mode; if (m) form.mode.value = m; form.readOnly.checked = true; };
  form.image.onchange = suggest; suggest();
  form.discardWrites.checked = false;
  $('#mount-discard').hidden = true;
  $('#mount-dialog').showModal();
}
$('#mount-form').addEventListener('submit', async (ev) => {
  if (ev.submitter?.value !== 'ok') return;
  ev.preventDefault();
  const form = ev.target;
  const mode = form.mode.value;
  try {
    await api('PUT', `/api/v1/agents/${encodeURIComponent(mountTarget.id)}/drives/${form.drive.value}`,
      { image: form.image.value, mode, readOnly: mode === 'cdrom' ? true : form.readOnly.checked, connected: form.connected.checked,
        discardWrites: form.discardWrites.checked });
    $('#mount-dialog').close();
    await refreshAgent(mountTarget.id);
  } catch (e) {
    $('#mount-error').textContent = e.message;
    if (e.code === 'unsaved-writes') $('#mount-discard').hidden = false; // the operator decides, knowingly
  }
});

// Save a writable drive's writes as a new image, following the agent's progress until it ends.
let snapshotTarget = null;
function openSnapshot(agent, index) {
  snapshotTarget = { agent: agent.id, index };
  const form = $('#snapshot-form');
  $('#snapshot-agent').textContent = agent.id;
  $('#snapshot-drive').textContent = index;
  $('#snapshot-error').textContent = '';
  $('#snapshot-progress').replaceChildren();
  form.name.value = '';
  $('#snapshot-ok').disabled = false;
  $('#snapshot-dialog').showModal();
}
$('#snapshot-form').addEventListener('submit', async (ev) => {
  if (ev.submitter?.value !== 'ok') return;
  ev.preventDefault();
  const { agent, index } = snapshotTarget;
  const url = `/api/v1/agents/${encodeURIComponent(agent)}/drives/${index}/snapshot`;
  $('#snapshot-error').textContent = '';
  try {
    const accepted = await api('POST', url, { name: ev.target.name.value });
    $('#snapshot-ok').disabled = true;
    for (;;) {
      const status = await api('GET', url);
      const r = status.reported;
      if (r && r.id === accepted.snapshotId) {
        $('#snapshot-progress').replaceChildren(progressBar(r.bytesDone, r.bytesTotal, `${r.state} · ${bytes(r.bytesDone)} / ${bytes(r.bytesTotal)} cut, ${bytes(r.bytesSent)} sent`));
        if (r.state === 'succeeded') { $('#snapshot-progress').append(el('p', { class: 'ok' }, `Saved as ${r.image}.`)); await reloadAll(); break; }
        if (r.state === 'failed') { $('#snapshot-error').textContent = r.error; $('#snapshot-ok').disabled = false; break; }
      }
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  } catch (e) { $('#snapshot-error').textContent = e.message; $('#snapshot-ok').disabled = false; }
});
async function eject(agent, index) {
  try { await api('PUT', `/api/v1/agents/${encodeURIComponent(agent.id)}/drives/${index}`, { image: null }); await refreshAgent(agent.id); }
  catch (e) { alert(e.message); }
}
// One agent fresh from the server after this page changed it (the live event follows, and changes the same row).
async function refreshAgent(id) {
  state.agents.set(id, await api('GET', `/api/v1/agents/${encodeURIComponent(id)}`));
  updateAgentRow(id);
  renderImages();
}
function confirmAction(text, okLabel, action) {
  $('#confirm-text').textContent = text;
  $('#confirm-ok').textContent = okLabel;
  $('#confirm-ok').hidden = !action;
  const dialog = $('#confirm-dialog');
  dialog.returnValue = '';
  dialog.onclose = async () => { if (dialog.returnValue === 'ok' && action) await action(); };
  dialog.showModal();
}
function confirmDelete(img, used) {
  confirmAction(used.length
    ? `"${img.name}" is used by ${used.join(', ')}; eject it there first.`
    : `Delete "${img.name}" (${bytes(img.size)})? Agents keep cached copies until they need the space.`, 'Delete',
  used.length > 0 ? null : async () => {
    try { await api('DELETE', `/api/v1/images/${encodeURIComponent(img.name)}`); await loadImages(); } catch (e) { alert(e.message); }
  });
}

// ---- rollouts -----------------------------------------------------------------------------------
// A list on the home view and a page per rollout (#/rollouts/{id}); both follow the "rollout" live events,
// which carry the whole RolloutView. Actions answer with the new view too, so the page never polls.
const ACTIVE = ['scheduled', 'running', 'paused', 'cancelling'];
// Execution states in the order a wave's bar stacks them.
const EXECUTION_STATES = ['succeeded', 'staged', 'pulling', 'queued', 'failed', 'timed-out', 'skipped', 'cancelled', 'reverted'];

async function loadRollouts() {
  const list = await api('GET', '/api/v1/rollouts');
  state.rollouts = new Map(list.map((r) => [r.id, r]));
  renderRollouts();
  const shown = state.rollouts.get(currentRolloutId());
  if (shown) renderRolloutPage(shown);
}

function upsertRollout(r) {
  // An action's answer and the engine's event race; a view whose state is older than the one shown is dropped
  // (updatedAt changes with the rollout's state, not with its executions' progress).
  const known = state.rollouts.get(r.id);
  if (known && Date.parse(r.updatedAt) < Date.parse(known.updatedAt)) return;
  state.rollouts.set(r.id, r);
  renderRollouts();
  if (currentRolloutId() === r.id) renderRolloutPage(r);
}

const total = (r) => Object.values(r.counts).reduce((s, n) => s + n, 0);

function renderRollouts() {
  const rows = [...state.rollouts.values()].sort((a, b) => b.createdAt.localeCompare(a.createdAt));
  $('#rollouts-empty').hidden = rows.length > 0;
  $('#rollouts').hidden = rows.length === 0;
  $('#rollouts tbody').replaceChildren(...rows.map((r) => el('tr', { dataset: { rollout: r.id, state: r.state } },
    el('td', {}, el('a', { href: `#/rollouts/${encodeURIComponent(r.id)}` }, r.name)),
    el('td', {}, r.spec.image),
    el('td', {}, el('span', { class: `state s-${r.state}` }, r.state)),
    el('td', {}, stackBar(r.counts, total(r))),
    el('td', { title: r.createdAt }, `${ago(r.createdAt)} by ${r.createdBy}`))));
}

// One bar per set of executions, a segment per state; its text says the same in words.
function stackBar(counts, size) {
  const parts = EXECUTION_STATES.filter((s) => counts[s] > 0);
  const text = `${counts.succeeded ?? 0}/${size} succeeded` + parts.filter((s) => s !== 'succeeded').map((s) => ` · ${counts[s]} ${s}`).join('');
  return el('div', { class: 'progress stack', role: 'img', 'aria-label': text, title: text },
    ...parts.map((s) => el('div', { class: `seg s-${s}`, width: `${(100 * counts[s] / Math.max(1, size)).toFixed(2)}%` })),
    el('span', {}, text));
}

function currentRolloutId() {
  const m = /^#\/rollouts\/([^/]+)$/.exec(location.hash);
  try { return m ? decodeURIComponent(m[1]) : null; } catch { return null; } // a mangled link shows the home view
}

async function route() {
  const id = currentRolloutId();
  $('#home').hidden = id !== null;
  $('#rollout-page').hidden = id === null;
  if (id !== null) await showRollout(id);
}
window.addEventListener('hashchange', () => { if (state.user) route(); });

async function showRollout(id) {
  try { upsertRollout(await api('GET', `/api/v1/rollouts/${encodeURIComponent(id)}`)); } catch (e) {
    $('#rollout-detail').replaceChildren(el('p', { class: 'error', role: 'alert' }, e.message));
  }
}

function renderRolloutPage(r) {
  const s = r.spec;
  const action = (label, path, body, cls = 'small') => el('button', { type: 'button', class: cls, dataset: { action: path }, onclick: () => act(r, path, body) }, label);
  const failed = (r.counts.failed ?? 0) + (r.counts['timed-out'] ?? 0);
  const actions = !canOperate() ? [] : [
    ['running', 'scheduled'].includes(r.state) ? action('Pause', 'pause') : null,
    r.state === 'paused' ? action('Resume', 'resume') : null,
    ['failed', 'finished', 'running', 'paused'].includes(r.state) && failed > 0 ? action('Retry failed', 'retry-failed') : null,
    ACTIVE.includes(r.state) && r.state !== 'cancelling' ? el('button', { type: 'button', class: 'small danger', dataset: { action: 'cancel' },
      onclick: () => confirmAction(`Cancel "${r.name}"? Agents already done keep the image.`, 'Cancel rollout', () => act(r, 'cancel', { revert: false })) }, 'Cancel') : null,
    ACTIVE.includes(r.state) && r.state !== 'cancelling' ? el('button', { type: 'button', class: 'small danger', dataset: { action: 'revert' },
      onclick: () => confirmAction(`Cancel "${r.name}" and put back what each changed drive had before?`, 'Cancel and revert', () => act(r, 'cancel', { revert: true })) }, 'Cancel and revert') : null,
  ].filter(Boolean);
  const facts = [
    ['Image', `${s.image} (${s.digest.slice(7, 19)})`],
    s.stageOnly ? ['Drive', 'staged only: pulled into the caches, attached nowhere']
      : ['Drive', `#${s.drive} as ${s.mode}${s.readOnly ? ', read-only' : ', writable'}${s.connect ? ', connected' : ', not connected'}`],
    ['Selector', s.selector || '(every agent)'],
    ['Waves', s.waves.join(', ')],
    ['Max concurrent pulls', s.maxConcurrentPulls ?? 'no limit'],
    s.maxConcurrentPullsPerSite ? ['Per site', `${s.maxConcurrentPullsPerSite} at a time`] : null,
    s.siteMaxBytesPerSecond ? ['Site budget', `${bytes(s.siteMaxBytesPerSecond)}/s, shared by the site's pulls`] : null,
    s.downloadWindows?.length ? ['Download windows', s.downloadWindows.map((w) => `${w.days?.join(',') ?? 'every day'} ${w.start}–${w.end} ${w.timeZone ?? 'UTC'}`).join('; ')] : null,
    ['Stops when', `more than ${s.failureThreshold.percent} % fail, once ${s.failureThreshold.minExecuted} ended`],
    ['Execution timeout', s.executionTimeoutSeconds ? `${s.executionTimeoutSeconds} s` : 'none (the deadline applies)'],
    ['Created', `${new Date(r.createdAt).toLocaleString()} by ${r.createdBy}`],
  ];
  $('#rollout-detail').replaceChildren(...[
    el('h2', {}, r.name, ' ', el('span', { id: 'rollout-state', class: `state s-${r.state}`, dataset: { state: r.state } }, r.state)),
    r.reason ? el('p', { id: 'rollout-reason' }, r.reason) : null,
    el('p', { id: 'rollout-action-error', class: 'error', role: 'alert' }),
    actions.length ? el('div', { class: 'actions' }, actions) : null,
    el('dl', { class: 'facts' }, facts.filter(Boolean).flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)])),
    el('h3', {}, 'Progress'),
    el('div', { id: 'rollout-total' }, stackBar(r.counts, total(r))),
    el('ol', { class: 'waves' }, r.waves.map((w) => el('li', { dataset: { wave: w.index } },
      el('span', { class: 'wave-name' }, `Wave ${w.index + 1} · ${w.size} agents`), stackBar(w.counts, w.size)))),
    el('h3', {}, 'Failures'),
    r.failures.length === 0 ? el('p', { class: 'hint' }, 'None.') : el('table', { id: 'rollout-failures' },
      el('thead', {}, el('tr', {}, el('th', {}, 'Agent'), el('th', {}, 'State'), el('th', {}, 'Error'))),
      el('tbody', {}, r.failures.map((f) => el('tr', { dataset: { agent: f.agentId } }, el('td', {}, f.agentId), el('td', {}, f.state), el('td', { class: 'error' }, f.error ?? ''))))),
    failed > r.failures.length ? el('p', { class: 'hint' }, `The first ${r.failures.length} of ${failed} failures.`) : null,
  ].filter(Boolean));
}

async function act(r, path, body) {
  try { upsertRollout(await api('POST', `/api/v1/rollouts/${encodeURIComponent(r.id)}/${path}`, body)); } catch (e) {
    const error = $('#rollout-action-error');
    if (error) error.textContent = e.message;
  }
}

// The create form: opened from an image; the selector preview asks the server which agents match.
let rolloutImage = null;
function openRollout(img) {
  rolloutImage = img;
  const form = $('#rollout-form');
  form.reset();
  $('#rollout-image').textContent = img.name;
  form.name.value = `${img.name} ${new Date().toISOString().slice(0, 16).replace('T', ' ')}`;
  form.mode.value = img.media?.suggestedMode === 'flash' ? 'flash' : 'cdrom';
  form.selector.value = fleet.selector;
  $('#rollout-error').textContent = '';
  syncReadOnly();
  previewSelector();
  $('#rollout-dialog').showModal();
}
function syncReadOnly() {
  const form = $('#rollout-form');
  const cdrom = form.mode.value === 'cdrom';
  if (cdrom) form.readOnly.checked = true;
  form.readOnly.disabled = cdrom; // a CD-ROM is always read-only
}
for (const radio of $('#rollout-form').querySelectorAll('input[name=mode]')) radio.addEventListener('change', syncReadOnly);

let previewToken = 0;
async function previewSelector() {
  const token = ++previewToken;
  const selector = $('#rollout-form').selector.value.trim();
  const p = new URLSearchParams();
  if (selector) p.set('selector', selector);
  const preview = $('#rollout-preview');
  try {
    const [summary, agents] = await Promise.all([api('GET', `/api/v1/fleet/summary?${p}`), api('GET', `/api/v1/agents?${p}&limit=10`)]);
    if (token !== previewToken) return;
    $('#rollout-selector-error').textContent = '';
    const n = summary.counts.total;
    preview.dataset.count = n;
    preview.replaceChildren(
      el('strong', { id: 'rollout-preview-count' }, n === 1 ? '1 agent matches' : `${n} agents match`),
      n > 0 ? ` (${summary.counts.offline} offline)` : ' — a rollout needs at least one',
      el('div', { class: 'mono hint' }, agents.map((a) => a.id).join(', ') + (n > agents.length ? ', …' : '')));
  } catch (e) {
    if (token !== previewToken) return;
    delete preview.dataset.count;
    preview.replaceChildren();
    $('#rollout-selector-error').textContent = e.message;
  }
}
$('#rollout-form').selector.addEventListener('input', debounce(previewSelector, 250));

function rolloutBody(form) {
  const number = (name) => (form[name].value.trim() === '' ? undefined : Number(form[name].value));
  const waves = form.waves.value.split(',').map((w) => w.trim()).filter(Boolean).map((w) => (/^\d+$/.test(w) ? Number(w) : w));
  const stage = form.stageOnly.checked; // staging attaches nothing: no mode, read-only or connect to send
  return {
    name: form.name.value.trim(), image: rolloutImage.name, drive: number('drive'), mode: stage ? undefined : form.mode.value,
    readOnly: stage ? undefined : form.readOnly.checked, connect: stage ? undefined : form.connect.checked, selector: form.selector.value.trim(),
    waves: waves.length ? waves : undefined, maxConcurrentPulls: number('maxConcurrentPulls'),
    failureThreshold: { percent: number('failurePercent') ?? 10, minExecuted: number('minExecuted') ?? 1 },
    executionTimeoutSeconds: number('executionTimeoutSeconds'),
    stageOnly: form.stageOnly.checked || undefined,
    maxConcurrentPullsPerSite: number('maxConcurrentPullsPerSite'),
    siteMaxBytesPerSecond: number('siteMegabytesPerSecond') === undefined ? undefined : Math.round(number('siteMegabytesPerSecond') * 1e6),
    downloadWindows: form.windowStart.value || form.windowEnd.value ? [{
      days: form.windowDays.value.trim() ? form.windowDays.value.split(',').map((d) => d.trim()).filter(Boolean) : undefined,
      start: form.windowStart.value, end: form.windowEnd.value, timeZone: form.windowTimeZone.value.trim() || undefined,
    }] : undefined,
  };
}
$('#rollout-form').addEventListener('submit', async (ev) => {
  if (ev.submitter?.value !== 'ok') return;
  ev.preventDefault();
  $('#rollout-error').textContent = '';
  try {
    const created = await api('POST', '/api/v1/rollouts', rolloutBody(ev.target));
    $('#rollout-dialog').close();
    upsertRollout(created);
    location.hash = `#/rollouts/${encodeURIComponent(created.id)}`;
  } catch (e) { $('#rollout-error').textContent = e.message; }
});

// ---- upload (push protocol, resumable) --------------------------------------------------------------
const dropzone = $('#dropzone');
dropzone.addEventListener('dragover', (e) => { e.preventDefault(); dropzone.classList.add('over'); });
dropzone.addEventListener('dragleave', () => dropzone.classList.remove('over'));
dropzone.addEventListener('drop', (e) => { e.preventDefault(); dropzone.classList.remove('over'); for (const f of e.dataTransfer.files) upload(f); });
$('#file-input').addEventListener('change', (e) => { for (const f of e.target.files) upload(f); e.target.value = ''; });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function withRetry(what, fn, status) {
  for (let attempt = 1; ; attempt++) {
    try { return await fn(); } catch (e) {
      if (e instanceof ApiError && e.status >= 400 && e.status < 500 && e.status !== 408 && e.status !== 429) throw e;
      const wait = Math.min(30000, 1000 * 2 ** Math.min(attempt - 1, 5));
      status(`${what} failed (${e.message}); retrying in ${Math.round(wait / 1000)} s…`);
      await sleep(wait);
    }
  }
}

async function upload(file) {
  const row = el('div', { class: 'upload', dataset: { upload: file.name } });
  const title = el('div', {}, el('strong', {}, file.name), ` ${bytes(file.size)}`);
  const bar = el('div'); const note = el('div', { class: 'hint' });
  row.append(title, bar, note);
  $('#uploads').prepend(row);
  const show = (done, total, label) => bar.replaceChildren(progressBar(done, total, label));
  const status = (text) => { note.textContent = text; };
  try {
    const name = file.name;
    const started = performance.now();
    const { manifest, chunks, engine } = await chunkFile(file, (done) => show(done, file.size, `reading ${bytes(done)} / ${bytes(file.size)}`));
    row.dataset.chunker = engine; // 'wasm' unless this browser refused the WebAssembly cutter (the JavaScript one cuts the same)
    status(`${chunks.length} chunks`);
    const session = await withRetry('starting the upload', () => api('POST', '/api/v1/uploads', manifest, { raw: true, contentType: 'application/vnd.msdfleet.manifest.v1+msgpack' }), status);
    const byId = new Map(chunks.map((c) => [c.hex, c]));
    let missing = session.missing.map((hex) => byId.get(hex));
    const toSend = missing.reduce((s, c) => s + c.length, 0);
    let sent = 0;
    const t0 = performance.now();
    while (missing.length > 0) {
      // ~8 MiB per request; after a failure ask the Coordinator again what it still lacks.
      const batch = [];
      let size = 0;
      while (missing.length > 0 && size < 8 * 1024 * 1024) { const c = missing.shift(); batch.push(c); size += c.length; }
      try {
        await api('POST', `/api/v1/uploads/${session.uploadId}/chunks`, await frame(file, batch), { raw: true, contentType: 'application/octet-stream' });
        sent += size;
        const rate = sent / Math.max(0.001, (performance.now() - t0) / 1000);
        const eta = rate > 0 ? (toSend - sent) / rate : 0;
        show(sent, toSend, `uploading ${bytes(sent)} / ${bytes(toSend)} · ${bytes(rate)}/s · ${Math.ceil(eta)} s left`);
        status(`${bytes(file.size - toSend)} already stored`);
      } catch (e) {
        if (e instanceof ApiError && e.status >= 400 && e.status < 500) throw e;
        status(`connection lost (${e.message}); resuming…`);
        await sleep(1000);
        const again = await withRetry('resuming', () => api('GET', `/api/v1/uploads/${session.uploadId}`), status);
        missing = again.missing.map((hex) => byId.get(hex));
        sent = toSend - missing.reduce((s, c) => s + c.length, 0);
      }
    }
    const replace = state.images.some((i) => i.name === name);
    if (replace && !window.confirm(`An image named "${name}" exists. Point the name at this new image?`)) {
      row.dataset.failed = 'true';
      status('not replaced (the chunks stay stored; drop the file again to finish)');
      return;
    }
    const entry = await withRetry('committing', () => api('POST', `/api/v1/uploads/${session.uploadId}/commit`, { name, replace }), status);
    show(1, 1, 'done');
    row.dataset.done = 'true';
    status(`stored as ${entry.digest.slice(0, 19)}… in ${((performance.now() - started) / 1000).toFixed(1)} s; sent ${bytes(toSend)} of ${bytes(file.size)}`);
    await loadImages();
  } catch (e) {
    row.dataset.failed = 'true';
    status(`failed: ${e.message}`);
  }
}

// ---- start --------------------------------------------------------------------------------------
(async () => {
  try { await showApp(await api('GET', '/api/v1/session')); } catch { showLogin(); }
})();

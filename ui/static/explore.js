// Enhancements for the search, trace and compare pages; each page works without this file.
// Reads only what the server rendered into the DOM; never evaluates span data.
'use strict';

(function searchForm() {
  const form = document.getElementById('search-form');
  if (!form) return;
  const service = form.querySelector('#service');
  const operation = form.querySelector('#operation');
  const lookback = form.querySelector('#lookback');
  const customRange = form.querySelector('#custom-range');

  // The operation list follows the chosen service without a round trip.
  const groups = Array.from(operation.querySelectorAll('optgroup'));
  function showOperations() {
    const chosen = service.value;
    for (const group of groups) {
      const show = chosen === '' || group.dataset.service === chosen;
      if (show && !group.parentNode) operation.appendChild(group);
      if (!show && group.parentNode) group.remove();
    }
    if (operation.selectedOptions.length === 0) operation.value = '';
  }
  service.addEventListener('change', () => {
    operation.value = '';
    showOperations();
  });
  showOperations();

  // The custom range fields matter only for a custom range.
  function showRange() {
    customRange.hidden = lookback.value !== 'custom';
  }
  lookback.addEventListener('change', showRange);
  showRange();
})();

(function compareForm() {
  const form = document.getElementById('compare-form');
  if (!form) return;
  const button = form.querySelector('#compare-button');
  const boxes = Array.from(form.querySelectorAll('input[name="trace"]'));
  function update() {
    const ticked = boxes.filter((box) => box.checked).length;
    button.disabled = ticked !== 2;
    button.textContent = ticked === 2 ? 'Compare the two selected' : `Compare selected (${ticked}/2)`;
  }
  for (const box of boxes) box.addEventListener('change', update);
  update();
})();

(function waterfall() {
  const waterfall = document.getElementById('waterfall');
  if (!waterfall) return;
  // Keep the selected span in view after the page loads scrolled to its anchor.
  const selected = waterfall.querySelector('.selected');
  if (selected && !location.hash) selected.scrollIntoView({ block: 'center' });
  // Alt+click on a fold opens or closes its whole subtree.
  waterfall.addEventListener('click', (event) => {
    const summary = event.target.closest('summary.row');
    if (!summary || !event.altKey || event.target.closest('a')) return;
    event.preventDefault();
    const details = summary.parentElement;
    const open = !details.open;
    details.open = open;
    for (const inner of details.querySelectorAll('details.node')) inner.open = open;
  });

  // Span details in place: a link of this trace that selects a span (a row, a parent, a linked
  // span of this trace) fetches only the details from /trace/{id}/detail and puts them under
  // the span's row; "Close details" removes them. The address follows with replaceState, so a
  // reload or a copied link shows the same. Enter on a focused link is a click, so the keyboard
  // works the same; without this script the links load the page.
  const keepers = Array.from(document.querySelectorAll('#critical-toggle, #expand-toggle, #zoom-reset'));
  const zoomForm = document.getElementById('zoom-form');
  function removeDetails() {
    const open = document.getElementById('detail');
    if (open) open.remove();
    for (const row of waterfall.querySelectorAll('.row.selected')) row.classList.remove('selected');
    for (const link of waterfall.querySelectorAll('a.span-link[aria-current]')) link.removeAttribute('aria-current');
  }
  // The page's other links keep the selection, as the server would have written them.
  function keepSelection(spanId) {
    for (const keeper of keepers) {
      const url = new URL(keeper.href);
      if (spanId) url.searchParams.set('span', spanId); else url.searchParams.delete('span');
      url.hash = spanId ? `span-${spanId}` : '';
      keeper.href = url.href;
    }
    if (!zoomForm) return;
    let kept = zoomForm.querySelector('input[name="span"]');
    if (spanId && !kept) {
      kept = document.createElement('input');
      kept.type = 'hidden';
      kept.name = 'span';
      zoomForm.prepend(kept);
    }
    if (spanId) kept.value = spanId; else if (kept) kept.remove();
  }
  // Links that change what the page shows besides the span (zoom, toggles) load it.
  const sameView = (url) => url.origin === location.origin && url.pathname === location.pathname
    && ['critical', 'expand', 'from', 'to'].every((name) => (url.searchParams.get(name) ?? '')
      === (new URLSearchParams(location.search).get(name) ?? ''));
  function showDetails(row, section) {
    removeDetails();
    row.classList.add('selected');
    row.querySelector('a.span-link').setAttribute('aria-current', 'true');
    if (row.tagName === 'SUMMARY') {
      // A fold's details open at the top of its children.
      row.parentElement.open = true;
      row.nextElementSibling.prepend(section);
    } else {
      row.after(section);
    }
    section.scrollIntoView({ block: 'nearest' });
  }
  async function select(url) {
    const spanId = url.searchParams.get('span');
    const row = spanId && document.getElementById(`span-${spanId}`);
    if (!row) return false;
    const fragment = new URL(url);
    fragment.pathname += '/detail';
    fragment.hash = '';
    const response = await fetch(fragment, { headers: { Accept: 'text/html' } });
    if (!response.ok) return false;
    // Parsed inert in a <template>: nothing in it loads or runs.
    const template = document.createElement('template');
    template.innerHTML = await response.text();
    const section = template.content.querySelector('section.detail');
    if (!section) return false;
    for (let node = row.parentElement; node && node !== waterfall; node = node.parentElement) {
      if (node.tagName === 'DETAILS') node.open = true;
    }
    showDetails(row, section);
    return true;
  }
  waterfall.addEventListener('click', (event) => {
    const link = event.target.closest('a[href]');
    if (!link || event.defaultPrevented || event.button !== 0
        || event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) return;
    const url = new URL(link.href);
    if (!sameView(url)) return;
    event.preventDefault();
    if (!url.searchParams.get('span')) {
      removeDetails();
      history.replaceState(null, '', url);
      keepSelection(null);
      return;
    }
    select(url).then((shown) => {
      if (!shown) {
        location.assign(url);
        return;
      }
      history.replaceState(null, '', url);
      keepSelection(url.searchParams.get('span'));
    }, () => location.assign(url));
  });
})();

(function minimapZoom() {
  // Dragging across the minimap zooms the waterfall to that stretch of the trace: the page
  // loads with ?from=…&to=… (milliseconds from the trace's start), as the form beneath sends.
  const minimap = document.getElementById('minimap');
  if (!minimap) return;
  const svg = minimap.querySelector('svg');
  const brush = document.getElementById('minimap-brush');
  const durationMs = Number(minimap.dataset.durationMs);
  if (!(durationMs > 0)) return;
  document.getElementById('zoom-hint').textContent = 'Drag across the overview to zoom, or show a window:';
  minimap.classList.add('draggable');
  let start = null;
  // The share of the trace under the pointer; the outermost pixels mean its very start and end.
  const fraction = (event) => {
    const box = svg.getBoundingClientRect();
    const share = (event.clientX - box.left) / box.width;
    return share < 0.005 ? 0 : share > 0.995 ? 1 : share;
  };
  function draw(from, to) {
    brush.setAttribute('x', (Math.min(from, to) * 1000).toFixed(1));
    brush.setAttribute('width', (Math.abs(to - from) * 1000).toFixed(1));
    brush.setAttribute('visibility', 'visible');
  }
  function cancel() {
    start = null;
    brush.setAttribute('visibility', 'hidden');
  }
  svg.addEventListener('pointerdown', (event) => {
    if (event.button !== 0) return;
    event.preventDefault();
    start = fraction(event);
    svg.setPointerCapture(event.pointerId);
    draw(start, start);
  });
  svg.addEventListener('pointermove', (event) => {
    if (start !== null) draw(start, fraction(event));
  });
  svg.addEventListener('pointercancel', cancel);
  svg.addEventListener('pointerup', (event) => {
    if (start === null) return;
    const end = fraction(event);
    const [from, to] = [Math.min(start, end), Math.max(start, end)];
    // A click, not a drag: nothing to zoom to.
    if ((to - from) * svg.getBoundingClientRect().width < 4) {
      cancel();
      return;
    }
    start = null;
    const ms = (share) => String(Number((share * durationMs).toFixed(3)));
    const url = new URL(location.href);
    url.searchParams.set('from', ms(from));
    url.searchParams.set('to', ms(to));
    url.hash = '';
    location.assign(url);
  });
})();

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
})();

// Drives search → trace → span details → linked trace → compare in headless Chromium:
// node tests/browser/explore_test.mjs BASE_URL OUTDIR. Expects the traces aaaa… and bbbb… that
// tests/ui_browser.rs stores (one with a script-bearing span name and attributes).
import { join } from 'node:path';
import { check, launchChromium, openPage, scriptArgs } from './common.mjs';

const [base, outdir] = scriptArgs('node tests/browser/explore_test.mjs BASE_URL OUTDIR', 2);

const TRACE_A = 'a'.repeat(32);
const TRACE_B = 'b'.repeat(32);

async function noScriptRan(page, where) {
  check(await page.evaluate(() => window.__xss) === undefined, `stored payload did not execute (${where})`);
}

const browser = await launchChromium();
try {
  for (const colorScheme of ['light', 'dark']) {
    const { page, problems } = await openPage(browser, colorScheme);
    const shot = (name) => page.screenshot({ path: join(outdir, `explore-${name}-${colorScheme}.png`), fullPage: false });

    // Search: both traces show up once the summarizer has seen them (every 2 s).
    for (let attempt = 0; ; attempt++) {
      await page.goto(`${base}/search`);
      if (await page.locator('#traces tbody tr').count() >= 2
          && await page.locator('#operation optgroup').count() >= 6) break;
      check(attempt < 40, 'traces appear in search');
      await page.waitForTimeout(250);
    }
    check(await page.title() === 'Search · ducktrace', `title: ${await page.title()}`);
    const rowA = page.locator('#traces tbody tr', { hasText: TRACE_A });
    check(await rowA.locator('.errors').innerText() === '1', 'trace A has one error');
    check((await rowA.locator('.chips').innerText()).includes('payments'), 'services of trace A');
    check(await page.locator('#scatter circle').count() === 2, 'one dot per trace');
    check(await page.locator('#scatter circle.failed').count() === 1, 'the failing trace is red');
    check(await page.locator('#compare-button').isDisabled(), 'compare needs two ticks');
    await noScriptRan(page, 'search');
    await shot('search');

    // Filters: the operation list follows the service; an attribute filter narrows the results.
    await page.selectOption('#service', 'payments');
    const operations = await page.locator('#operation option').allInnerTexts();
    check(operations.includes('Charge') && !operations.includes('PlaceOrder'),
      `operations of payments: ${operations} in ${await page.locator('#operation').innerHTML()}`);
    await page.fill('#attributes', 'http.status_code=500');
    await page.selectOption('#service', '');
    await page.getByRole('button', { name: 'Find traces' }).click();
    await page.waitForSelector('#result-count');
    check(await page.locator('#result-count').innerText() === '1 trace', 'attribute filter');
    await page.fill('#min_duration', 'soon');
    await page.getByRole('button', { name: 'Find traces' }).click();
    check((await page.locator('#search-error').innerText()).includes('not a duration'), 'bad duration explained');
    await shot('search-error');

    // Trace A: header, tree, flags.
    await page.goto(`${base}/search`);
    await page.locator('#traces tbody tr', { hasText: TRACE_A }).locator('a.trace-link').click();
    await page.waitForSelector('#waterfall');
    check(page.url().endsWith(`/trace/${TRACE_A}`), `on trace A: ${page.url()}`);
    check(await page.locator('#span-count').innerText() === '6', 'six spans');
    check(await page.locator('#error-count').innerText() === '1', 'one error');
    check((await page.locator('#trace-warnings').innerText()).includes('not in this trace'), 'orphan flagged');
    check(await page.locator('#span-a000000000000006 .flag').innerText() === 'orphan', 'orphan row marked');
    check(await page.locator('#span-a000000000000003.failed').count() === 1, 'error row marked');
    const hostile = page.locator('#span-a000000000000005 .op');
    check(await hostile.innerText() === '<script>window.__xss=3</script>', 'script name shown as text');
    check(await page.locator('.minimap rect:not(.brush)').count() === 6, 'minimap has every span');
    check(await page.locator('#self-by-service tbody tr').count() === 6, 'self time for six services');
    // Six services, six colours as drawn (db and inventory shared one when names were hashed).
    const drawn = await page.locator('.chips .svc').evaluateAll(
      (chips) => chips.map((chip) => getComputedStyle(chip).borderLeftColor));
    check(drawn.length === 6 && new Set(drawn).size === 6, `one colour per service: ${drawn}`);
    await noScriptRan(page, 'trace');

    // Keyboard: a fold opens and closes with Enter.
    const root = page.locator('#span-a000000000000001');
    await root.focus();
    await page.keyboard.press('Enter');
    check(await page.locator('#span-a000000000000002').isHidden(), 'Enter folds the root');
    await page.keyboard.press('Enter');
    check(await page.locator('#span-a000000000000002').isVisible(), 'Enter unfolds it again');
    await shot('trace');

    // Span details, in place: the page stays (the marker on window survives), the address
    // follows. Typed attributes, status, events.
    const pageUrl = page.url();
    await page.evaluate(() => { window.__samePage = true; });
    const detailOf = async (spanId) => {
      await page.waitForFunction((id) => document.querySelector('#detail-span-id')?.textContent === id, spanId);
      check(await page.locator('section.detail').count() === 1, `one details section for ${spanId}`);
      check(await page.locator(`#span-${spanId}.selected`).count() === 1, `${spanId} marked selected`);
      check(page.url().includes(`?span=${spanId}`), `address names ${spanId}: ${page.url()}`);
    };
    await page.locator('#span-a000000000000003 a.span-link').click();
    await detailOf('a000000000000003');
    check(await page.evaluate(() => window.__samePage) === true, 'details shown without loading a page');
    check(await page.locator('#span-a000000000000003 + #detail').count() === 1, 'details right under the row');
    check(await page.locator('#detail-status').innerText() === 'ERROR', 'status');
    check(await page.locator('#status-message').innerText() === 'card declined', 'status message');
    const amount = page.locator('#span-attributes tr', { hasText: 'amount' });
    check(await amount.locator('td.type').innerText() === 'double', 'typed attribute');
    check(await amount.locator('td.value').innerText() === '12.5', 'attribute value');
    check((await page.locator('#critical-toggle').getAttribute('href')).includes('span=a000000000000003'),
      'the critical path toggle keeps the selection');
    await shot('span');
    // From the keyboard: Enter on a focused span link.
    await page.locator('#span-a000000000000002 a.span-link').focus();
    await page.keyboard.press('Enter');
    await detailOf('a000000000000002');
    check(await page.locator('#span-a000000000000002 + .kids > #detail').count() === 1, 'a fold shows details above its children');
    check((await page.locator('#span-events').innerText()).includes('retry'), 'event listed');
    check((await page.locator('#span-events').innerText()).includes('+80 ms'), 'event offset in the span');
    // The parent link inside the details selects the parent in place too.
    await page.locator('#detail a', { hasText: 'a000000000000001' }).click();
    await detailOf('a000000000000001');
    // Stored script in the fetched fragment stays text.
    await page.locator('#span-a000000000000005 a.span-link').click();
    await detailOf('a000000000000005');
    check((await page.locator('#span-attributes').innerText()).includes('<img src=x onerror=window.__xss=4>'), 'hostile key as text');
    check((await page.locator('#span-attributes').innerText()).includes('"><svg onload=window.__xss=5>'), 'hostile value as text');
    check((await page.locator('#detail-title').innerText()).includes('<script>window.__xss=3</script>'), 'hostile name as text');
    check(await page.locator('#detail img, #detail script, #detail svg:not(.event-line)').count() === 0, 'no markup from span data');
    await noScriptRan(page, 'span details');
    check(await page.evaluate(() => window.__samePage) === true, 'still the same page');
    // A reload shows the same span from the address alone.
    await page.reload();
    check(await page.locator('#detail-span-id').innerText() === 'a000000000000005', 'reload keeps the span');
    // Close, in place.
    await page.evaluate(() => { window.__samePage = true; });
    await page.locator('#detail a.close').click();
    await page.waitForSelector('#detail', { state: 'detached' });
    check(await page.evaluate(() => window.__samePage) === true, 'closed without loading a page');
    check(!page.url().includes('span='), `address without a span: ${page.url()}`);
    check(pageUrl.startsWith(page.url().split('#')[0]), `same trace: ${page.url()}`);
    await page.locator('#span-a000000000000005 a.span-link').click();
    await detailOf('a000000000000005');

    // Critical path on demand.
    await page.locator('#critical-toggle').click();
    await page.waitForSelector('.waterfall.critical');
    check(await page.locator('#detail-span-id').innerText() === 'a000000000000005', 'the toggle kept the span');
    const critical = await page.locator('.row.crit').evaluateAll((rows) => rows.map((row) => row.id));
    check(critical.includes('span-a000000000000001') && critical.includes('span-a000000000000002'), `critical path: ${critical}`);
    await shot('critical');

    // Zoom: drag across the first fifth of the minimap (trace A lasts 300 ms).
    await page.goto(`${base}/trace/${TRACE_A}`);
    const svgBox = await page.locator('#minimap svg').boundingBox();
    const midY = svgBox.y + svgBox.height / 2;
    await page.mouse.move(svgBox.x + 0.5, midY);
    await page.mouse.down();
    await page.mouse.move(svgBox.x + svgBox.width * 0.1, midY, { steps: 4 });
    check(await page.locator('#minimap-brush').getAttribute('visibility') === 'visible', 'the brush follows the drag');
    await page.mouse.move(svgBox.x + svgBox.width * 0.2, midY, { steps: 4 });
    await page.mouse.up();
    await page.waitForURL(/[?&]to=/);
    const zoomed = new URL(page.url()).searchParams;
    const [from, to] = [Number(zoomed.get('from')), Number(zoomed.get('to'))];
    check(from === 0 && Math.abs(to - 60) < 3, `dragged window: ${from}–${to} ms`);
    check(await page.locator('#zoom-window').isVisible(), 'the window is named');
    check(await page.locator('.minimap rect.shade').count() === 2, 'the minimap shades what is cut off');
    const outside = await page.locator('.row.outside').evaluateAll((rows) => rows.map((row) => row.id).sort());
    check(outside.join() === 'span-a000000000000004,span-a000000000000005,span-a000000000000006',
      `spans after the window lose their bars: ${outside}`);
    check(await page.locator('.row.outside .bar rect').count() === 0, 'no bars outside the window');
    const rootBar = page.locator('#span-a000000000000001 .bar rect');
    check(Number(await rootBar.getAttribute('x')) === 0 && Number(await rootBar.getAttribute('width')) === 1000,
      `the root is clipped to the window: ${await rootBar.getAttribute('x')} ${await rootBar.getAttribute('width')}`);
    const checkoutX = Number(await page.locator('#span-a000000000000002 .bar rect').getAttribute('x'));
    const expectedX = (20 - from) / (to - from) * 1000;
    check(Math.abs(checkoutX - expectedX) < 1, `checkout starts at 20 ms: x ${checkoutX}, expected ${expectedX}`);
    const firstTick = await page.locator('.ruler span').first().innerText();
    const lastTick = await page.locator('.ruler span').last().innerText();
    check(!lastTick.startsWith('300'), `the ruler spans the window: ${firstTick} … ${lastTick}`);
    await shot('zoom');
    // Details open in place within the zoom, and the reset keeps the span.
    await page.locator('#span-a000000000000003 a.span-link').click();
    await detailOf('a000000000000003');
    check(page.url().includes('to='), `the zoom stays: ${page.url()}`);
    await page.locator('#zoom-reset').click();
    await page.waitForURL((url) => !url.searchParams.has('to'));
    check(await page.locator('.row.outside').count() === 0, 'reset shows every bar');
    check(await page.locator('.minimap rect.shade').count() === 0, 'nothing shaded after reset');
    check(await page.locator('#detail-span-id').innerText() === 'a000000000000003', 'reset keeps the span');
    // The same from the form, and from a span's details.
    await page.fill('#zoom-from', '0');
    await page.fill('#zoom-to', '30');
    await page.getByRole('button', { name: 'Zoom', exact: true }).click();
    await page.waitForURL(/to=30/);
    check(await page.locator('.row.outside').count() === 4, 'from the form: four spans start after 30 ms');
    await page.locator('#detail a.zoom-to').click();
    await page.waitForURL(/from=40&to=200/);
    check((await page.locator('#zoom-window').innerText()).includes('+40 ms to +200 ms'),
      `zoomed to the span: ${await page.locator('#zoom-window').innerText()}`);
    await noScriptRan(page, 'zoom');

    // Follow the link from Reserve into trace B.
    await page.locator('#span-a000000000000004 a.span-link').click();
    await page.waitForSelector('#span-links');
    await page.locator('#span-links a.linked-span').click();
    await page.waitForURL(`**/trace/${TRACE_B}?span=b000000000000004*`);
    await page.waitForSelector('#detail');
    check(page.url().includes(`/trace/${TRACE_B}?span=b000000000000004`), `on trace B: ${page.url()}`);
    check(await page.locator('#detail-span-id').innerText() === 'b000000000000004', 'linked span selected');

    // Compare A and B from the search page.
    await page.goto(`${base}/search`);
    await page.locator(`input[value="${TRACE_A}"]`).check();
    await page.locator(`input[value="${TRACE_B}"]`).check();
    check(!(await page.locator('#compare-button').isDisabled()), 'compare enabled with two ticks');
    await page.locator('#compare-button').click();
    await page.waitForSelector('#diff');
    const rows = await page.locator('#diff tbody tr').evaluateAll((trs) => trs.map((tr) => `${tr.className}:${tr.querySelector('.op').textContent}`));
    check(rows.includes('removed:<script>window.__xss=3</script>'), `db call only in the first: ${rows}`);
    check(rows.includes('added:cache get'), `cache call only in the second: ${rows}`);
    check(rows.includes('removed:SendReceipt') || rows.includes('added:SendReceipt'), `orphan compared: ${rows}`);
    await noScriptRan(page, 'compare');
    await shot('compare');

    // The bad-duration search answers 400 on purpose; anything else (a CSP violation) fails.
    const unexpected = problems.filter((text) => !text.includes('status of 400'));
    check(unexpected.length === 0, `console errors: ${unexpected}`);
    await page.close();
  }
  console.log('explore_test: ok');
} finally {
  await browser.close();
}

// Drives the overview pages in headless Chromium:
//   node tests/browser/overview_test.mjs BASE_URL OUTDIR FAILED_TRACE_ID
// Expects the shop of tests/common/shop.rs to be stored (gateway → auth, gateway → orders →
// inventory, gateway → a service named <img src=x onerror=window.__xss=1>), its calls matched,
// and FAILED_TRACE_ID to be the newest failed trace.
import { join } from 'node:path';
import { check, launchChromium, openPage, scriptArgs } from './common.mjs';

const [base, outdir, failedTrace] = scriptArgs('node tests/browser/overview_test.mjs BASE_URL OUTDIR FAILED_TRACE_ID', 3);

const HOSTILE = '<img src=x onerror=window.__xss=1>';
const SERVICES = ['auth', 'gateway', HOSTILE, 'inventory', 'orders'];

// In the page: every node and edge label as one box (its frame and its text), and whether any
// two boxes overlap or a text spills out of its frame.
function graphBoxProblems() {
  const box = (element) => element.getBoundingClientRect();
  const union = (a, b) => ({
    left: Math.min(a.left, b.left), top: Math.min(a.top, b.top),
    right: Math.max(a.right, b.right), bottom: Math.max(a.bottom, b.bottom),
  });
  const problems = [];
  const groups = [...document.querySelectorAll('#dependency-graph a.node, #dependency-graph g.edge-label')];
  const boxes = groups.map((group) => {
    const frame = box(group.querySelector('rect'));
    let whole = frame;
    for (const text of group.querySelectorAll('text')) {
      const t = box(text);
      if (t.left < frame.left - 0.5 || t.right > frame.right + 0.5 || t.top < frame.top - 0.5 || t.bottom > frame.bottom + 0.5) {
        problems.push(`text "${text.textContent}" spills out of its box`);
      }
      whole = union(whole, t);
    }
    return { name: group.textContent.trim().replace(/\s+/g, ' '), ...whole };
  });
  for (let i = 0; i < boxes.length; i++) {
    for (let j = i + 1; j < boxes.length; j++) {
      const [a, b] = [boxes[i], boxes[j]];
      if (a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom) {
        problems.push(`"${a.name}" overlaps "${b.name}"`);
      }
    }
  }
  return { problems, count: boxes.length };
}

const browser = await launchChromium();
try {
  for (const colorScheme of ['light', 'dark']) {
    // The trace page belongs to another part of the UI and may answer 404 here.
    const { page, problems } = await openPage(browser, colorScheme, (text) => text.includes('404'));

    // The dependency graph.
    await page.goto(`${base}/dependencies`);
    check(await page.title() === 'Dependencies · ducktrace', `title: ${await page.title()}`);
    const nodes = await page.locator('#dependency-graph a.node').evaluateAll(
      (links) => links.map((link) => link.querySelector('title').textContent).sort());
    check(JSON.stringify(nodes) === JSON.stringify([...SERVICES].sort()), `nodes: ${nodes}`);
    check(await page.locator('#dependency-graph path.edge').count() === 4, 'four edges');
    check(await page.locator('#dependency-graph path.edge.hot').count() === 2, 'two error-heavy edges');
    const labels = await page.locator('#dependency-graph g.edge-label text').allTextContents();
    check(labels.includes('30 calls · 0% err'), `gateway → auth label: ${labels}`);
    check(labels.filter((text) => text === '30 calls · 26.7% err').length === 2, `failing labels: ${labels}`);
    check(labels.includes('3 calls · 0% err'), `hostile edge label: ${labels}`);
    check(labels.filter((text) => /^p50 .+ · p99 .+$/.test(text)).length === 4, `latency labels: ${labels}`);
    const boxes = await page.evaluate(graphBoxProblems);
    check(boxes.count === 9, `five nodes and four labels measured, got ${boxes.count}`);
    check(boxes.problems.length === 0, `graph layout: ${boxes.problems.join('; ')}`);
    check(await page.evaluate(() => window.__xss) === undefined, 'stored payload did not execute');
    const tableRows = await page.locator('#edge-table tbody tr').count();
    check(tableRows === 4, `edge table rows: ${tableRows}`);
    await page.screenshot({ path: join(outdir, `dependencies-${colorScheme}.png`), fullPage: true });

    // To a service page: by mouse in light, by keyboard in dark.
    const orders = page.locator('#dependency-graph a.node[aria-label="Service orders"]');
    if (colorScheme === 'light') {
      await orders.click();
    } else {
      await orders.focus();
      await page.keyboard.press('Enter');
    }
    await page.waitForURL(/\/services\/orders\?lookback=1h$/);
    check(await page.locator('#service-name').innerText() === 'orders', 'on the orders page');
    check(await page.locator('svg.chart-svg').count() === 4, 'three RED charts and a histogram');
    const bars = await page.locator('figure.chart').first().locator('svg.chart-svg rect[fill]').count();
    check(bars >= 30, `request bars drawn: ${bars}`);
    const slowest = await page.locator('#slowest tbody tr').allInnerTexts();
    check(slowest.length === 1 && slowest[0].includes('POST /orders'), `slowest: ${slowest}`);
    const failing = await page.locator('#failing tbody tr').allInnerTexts();
    check(failing.length === 1 && failing[0].includes('POST /orders') && failing[0].includes('8'), `failing: ${failing}`);
    const tiles = await page.locator('.tiles li').allInnerTexts();
    check(tiles.some((tile) => tile.includes('30')), `tiles: ${tiles}`);
    await page.screenshot({ path: join(outdir, `service-${colorScheme}.png`), fullPage: true });

    // One operation's charts, then an example trace.
    await page.locator('#operations a', { hasText: 'POST /orders' }).click();
    await page.waitForURL(/operation=POST%20%2Forders/);
    check((await page.locator('h1').innerText()).includes('POST /orders'), 'operation in the heading');
    // The trace page is another part of the UI: check that the browser asks for the right one.
    const [traceResponse] = await Promise.all([
      page.waitForResponse((response) => response.url().includes('/trace/')),
      page.locator('#failing a.example').click(),
    ]);
    check(traceResponse.url().endsWith(`/trace/${failedTrace}`), `example trace: ${traceResponse.url()}`);

    // Services, including the hostile one, shown as text.
    await page.goto(`${base}/services`);
    const names = await page.locator('#service-table tbody td:first-child').allInnerTexts();
    check(names.includes(HOSTILE), `hostile name as text: ${names}`);
    await page.screenshot({ path: join(outdir, `services-${colorScheme}.png`), fullPage: true });
    await page.locator('#service-table a', { hasText: 'onerror' }).click();
    check(await page.locator('#service-name').innerText() === HOSTILE, 'hostile service page');
    check(await page.locator('#operations tbody a').first().innerText() === '<script>alert(1)</script>', 'operation as text');
    check(await page.evaluate(() => window.__xss) === undefined, 'stored payload did not execute');

    check(problems.length === 0, `console errors: ${problems}`);
    await page.close();
  }
  console.log('overview_test: ok');
} finally {
  await browser.close();
}

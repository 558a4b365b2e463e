// Drives the web pages in headless Chromium: node tests/browser/ui_test.mjs BASE_URL OUTDIR.
// Expects the span named `<script>alert(1)</script>` from tests/ui_browser.rs to be stored.
import { join } from 'node:path';
import { check, launchChromium, openPage, scriptArgs } from './common.mjs';

const [base, outdir] = scriptArgs('node tests/browser/ui_test.mjs BASE_URL OUTDIR', 2);

const browser = await launchChromium();
try {
  for (const colorScheme of ['light', 'dark']) {
    const { page, problems: violations } = await openPage(browser, colorScheme);

    await page.goto(`${base}/sql`);
    check(await page.title() === 'SQL · ducktrace', `title: ${await page.title()}`);
    check(await page.locator('nav a[aria-current="page"]').innerText() === 'SQL', 'SQL is the current page');

    // The keyboard reaches the skip link first.
    await page.keyboard.press('Tab');
    check(await page.evaluate(() => document.activeElement.className) === 'skip', 'skip link is focused first');

    await page.screenshot({ path: join(outdir, `sql-empty-${colorScheme}.png`), fullPage: true });

    // Run an example, then a query of our own that returns the hostile span.
    await page.getByRole('button', { name: 'Spans per service' }).click();
    await page.waitForSelector('table.results');
    await page.fill('#q', 'SELECT service_name, span_name, duration_ns FROM spans');
    await page.getByRole('button', { name: 'Run' }).click();
    await page.waitForSelector('table.results');
    const cells = await page.locator('table.results td').allInnerTexts();
    check(cells.includes('<script>alert(1)</script>'), `span name shown as text: ${cells}`);
    check(cells.includes('<img src=x onerror=window.__xss=1>'), `service shown as text: ${cells}`);
    check(await page.evaluate(() => window.__xss) === undefined, 'stored payload did not execute');
    check(await page.locator('#row-count').innerText() === '1 row', 'row count');
    const csvHref = await page.locator('#csv-download').getAttribute('href');
    const csv = await (await page.request.get(new URL(csvHref, base).href)).text();
    check(csv.startsWith('service_name,span_name,duration_ns') && csv.includes('<script>alert(1)</script>'),
      `CSV download: ${csv}`);
    await page.screenshot({ path: join(outdir, `sql-result-${colorScheme}.png`), fullPage: true });

    await page.fill('#q', 'SELEC nonsense');
    await page.getByRole('button', { name: 'Run' }).click();
    check(await page.locator('p.error').isVisible(), 'syntax error shown');
    await page.screenshot({ path: join(outdir, `sql-error-${colorScheme}.png`), fullPage: true });

    const blocked = violations.filter((text) => !text.includes('400'));
    check(blocked.length === 0, `console errors: ${blocked}`);
    await page.close();
  }
  console.log('ui_test: ok');
} finally {
  await browser.close();
}

// What every browser test script shares: its arguments, the Chromium it drives and `check`.
import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';

// playwright-core lives in tests/clients/node_modules, next to the other test clients.
const require = createRequire(new URL('../clients/package.json', import.meta.url));
const { chromium } = require('playwright-core');

// The script's arguments (BASE_URL OUTDIR …): all `count` of them, or the usage and exit 2.
// OUTDIR, the second, is created for the screenshots.
export function scriptArgs(usage, count) {
  const args = process.argv.slice(2);
  if (args.length < count || args.slice(0, count).some((arg) => !arg)) {
    console.error(`usage: ${usage}`);
    process.exit(2);
  }
  mkdirSync(args[1], { recursive: true });
  return args;
}

export function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

// Debian's headless Chromium, kept off the network except for the page under test.
export function launchChromium() {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

// A page of the usual size in `colorScheme`, and the list its console errors (unless `ignore`d)
// and uncaught script errors are collected in.
export async function openPage(browser, colorScheme, ignore = () => false) {
  const page = await browser.newPage({ colorScheme, viewport: { width: 1366, height: 800 } });
  const problems = [];
  page.on('console', (message) => {
    if (message.type() === 'error' && !ignore(message.text())) problems.push(message.text());
  });
  page.on('pageerror', (error) => problems.push(error.message));
  return { page, problems };
}

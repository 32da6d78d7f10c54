// The first-run experience in a real browser: Debian's headless Chromium opens sidegate dev's
// URL, lands on the development IdP's picker, types a user, and ends on the echo page, which
// is screenshotted (and the picker, beside it as <name>-idp.png) for a human to look at.
//
//   node tests/browser/first-run.mjs <url> <screenshot.png>
//
// Prints one JSON line: {"ok":true,"steps":[...],"echo":"<visible text>"} or {"ok":false,"error":...}.
// Chromium is /usr/bin/chromium unless CHROMIUM is set. Loopback only: the flags turn off
// every background connection Chromium would otherwise make.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [url, shot] = process.argv.slice(2);
const steps = [];
const profile = mkdtempSync(join(tmpdir(), 'sidegate-chromium-'));

let browser;
async function finish(obj, code) {
  if (browser) await browser.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  process.stdout.write(`${JSON.stringify(obj)}\n`, () => process.exit(code));
}

try {
  if (!url || !shot) throw new Error('usage: first-run.mjs <url> <screenshot.png>');
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
    viewport: { width: 1100, height: 900 },
    timeout: 30000,
  });
  const page = browser.pages()[0] || (await browser.newPage());
  page.setDefaultTimeout(15000);

  await page.goto(url);
  steps.push({ at: page.url(), title: await page.title() });
  const banner = await page.locator('.banner').innerText();
  if (!banner.includes('DEVELOPMENT ONLY')) throw new Error(`no dev banner on the IdP page: ${banner}`);
  await page.screenshot({ path: shot.replace(/\.png$/, '-idp.png'), fullPage: true });

  // Type our own user, as a newcomer trying the custom form would.
  await page.fill('#custom input[name="user"]', 'newcomer');
  await page.fill('#custom input[name="email"]', 'newcomer@example.test');
  await page.fill('#custom input[name="role"]', 'developer');
  await page.fill('#custom input[name="teams"]', 'platform, docs');
  await Promise.all([
    page.waitForURL((u) => u.toString().startsWith(url), { waitUntil: 'load' }),
    page.click('#custom button[type="submit"]'),
  ]);
  steps.push({ at: page.url(), title: await page.title() });
  const echo = await page.locator('main').innerText();
  await page.screenshot({ path: shot, fullPage: true });
  await finish({ ok: true, steps, echo }, 0);
} catch (e) {
  await finish({ ok: false, steps, error: String((e && e.stack) || e) }, 1);
}

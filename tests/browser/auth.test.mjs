// Browser test of the web UI under inbound auth, in Debian's chromium via
// playwright-core.
//
// Run by tests/ui.rs against `tracegate serve` started with a gateway token
// on a database holding one demo run. The page must ask for the token,
// refuse a wrong one, and with the right one show the run — every data
// request then carrying the token.
//
// Environment:
//   GATEWAY_URL    the gateway (required)
//   GATEWAY_TOKEN  the token it accepts (required)
//   CHROMIUM       the browser binary (default /usr/bin/chromium)
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const gateway = process.env.GATEWAY_URL;
const token = process.env.GATEWAY_TOKEN;
assert.ok(gateway && token, 'GATEWAY_URL and GATEWAY_TOKEN must be set');

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
});
const page = await browser.newPage();
page.setDefaultTimeout(15000);
// Script errors fail the test; the browser's own "401" resource messages are
// what this test provokes, so they are not problems.
const problems = [];
page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
page.on('console', (message) => {
  if (message.type() === 'error' && !/status of 401/.test(message.text())) problems.push(`console: ${message.text()}`);
});
// Requests sent with the wrong token may still be answered after the right
// one is given, so a refusal counts against the page only when the refused
// request carried the right token.
const refusedWithToken = [];
page.on('response', (response) => {
  const sent = Object.values(response.request().headers()).some((value) => value.includes(token));
  if (response.status() === 401 && sent) refusedWithToken.push(response.url());
});

try {
  await page.goto(`${gateway}/ui/`);
  const dialog = page.locator('dialog.login[open]');
  await dialog.waitFor();
  assert.match(await dialog.innerText(), /This gateway needs a token/);
  assert.equal(await page.locator('table.runs tbody tr').count(), 0, 'no data before the token');

  // A wrong token is refused and asked for again.
  await dialog.locator('input[name=token]').fill('not-the-token');
  await dialog.locator('button[type=submit]').click();
  await page.locator('dialog.login[open]', { hasText: 'That token was not accepted' }).waitFor();

  // The right one opens the runs.
  await page.locator('dialog.login[open] input[name=token]').fill(token);
  await page.locator('dialog.login[open] button[type=submit]').click();
  const runRow = page.locator('table.runs tbody tr').filter({ hasText: 'demo-run-' });
  await runRow.first().waitFor();
  assert.equal(await page.locator('dialog.login').count(), 0, 'the dialog is gone');

  // The token lasts for the tab: a run view loads without asking again.
  await runRow.locator('a').first().click();
  await page.locator('svg.waterfall g.bar').first().waitFor();
  assert.equal(await page.locator('dialog.login').count(), 0);
  assert.deepEqual(refusedWithToken, [], 'no request carrying the token was refused');
  assert.deepEqual(problems, [], 'the page logged no errors');
  console.log('UI auth browser test passed');
} finally {
  await browser.close();
}

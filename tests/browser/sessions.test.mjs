// Browser test of the UI's sessions: the list (sessions with a run and
// without one, its filters and time range), a session's page (its steps as
// a tree and a waterfall, calls without a model hidden until asked for, a
// retried step shown as one step with its attempts), and a call's page
// (previous and next step, the attempts, copying ids).
//
// Run by tests/ui.rs after `tracegate demo` recorded one run and the test
// recorded, through the gateway, a session without a run: step 1; a model
// list and a token count (operation `other`); step 2, failing twice with a
// 500 and then answered (the same request each time); step 3, streamed,
// under step 2; and one call without any identity. It also recorded a
// model list in the demo run, which the run's page hides until asked for.
//
// Every step waits for the state it asserts (a request answered late must
// not make it flaky): the rows, the `data-trace-id` of the page drawn, the
// "copied" mark of the button clicked.
//
// Environment:
//   GATEWAY_URL  the gateway (required)
//   SESSION_ID   the session without a run
//   STEP1, STEP3 the trace ids of steps 1 and 3
//   STEP2        step 2's three attempts, comma-separated, first to last
//   OTHERS       the two calls without a model, comma-separated
//   LOOSE        the call without a session
//   RUN_ID       the demo run
//   RUN_OTHER    the model list recorded in the demo run
//   (the session has two feedback items: reward 0.75 on it, pass@1 true on
//   step 1; its page shows them in a table)
//   SCREENSHOT   where to save the session page's screenshot; beside it go
//                the sessions list (-list.png), the session page with the
//                other calls shown (-other.png) and a call (-call.png)
//   CHROMIUM     the browser binary (default /usr/bin/chromium)
import assert from 'node:assert/strict';
import path from 'node:path';
import { chromium } from 'playwright-core';

const env = (name) => {
  assert.ok(process.env[name], `${name} must be set`);
  return process.env[name];
};
const gateway = env('GATEWAY_URL');
const sessionId = env('SESSION_ID');
const step1 = env('STEP1');
const step2 = env('STEP2').split(',');
const step3 = env('STEP3');
const others = env('OTHERS').split(',');
const loose = env('LOOSE');
const runId = env('RUN_ID');
const runOther = env('RUN_OTHER');
const screenshot = path.resolve(process.env.SCREENSHOT || 'ui-sessions-screenshot.png');
const beside = (suffix) => screenshot.replace(/(\.png)?$/, `-${suffix}.png`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
});
const context = await browser.newContext({ viewport: { width: 1440, height: 1000 } });
await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: gateway });
const page = await context.newPage();
page.setDefaultTimeout(15000);
// Any script error or CSP violation in the page fails the test.
const problems = [];
page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
page.on('console', (message) => { if (message.type() === 'error') problems.push(`console: ${message.text()}`); });

const text = (selector) => page.locator(selector).first().innerText();
const count = (selector) => page.locator(selector).count();
// Waits until `selector` matches exactly `n` elements.
const matches = (selector, n) => page.waitForFunction(([sel, want]) => document.querySelectorAll(sel).length === want, [selector, n]);
async function shoot(file) {
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: file, fullPage: true });
}

try {
  // ---- the sessions list: with a run and without ----
  await page.goto(`${gateway}/ui/#/sessions`);
  const rows = 'table.sessions tbody tr';
  const solo = page.locator(`${rows}[data-session-id="${sessionId}"]`);
  await solo.waitFor();
  const looseRows = '.loose-box table.calls tbody tr';
  await matches(looseRows, 1);
  assert.equal(await count(rows), 3, 'the demo run\'s two sessions and the one without a run');
  assert.equal(await page.locator(rows).first().getAttribute('data-session-id'), sessionId, 'newest first');
  assert.equal(await solo.getAttribute('data-run-id'), '');
  assert.match(await solo.locator('td.run').innerText(), /no run/);
  assert.equal(await solo.locator('td.calls').innerText(), '7');
  assert.equal(await solo.locator('td.errors').innerText(), '2');
  assert.equal(await solo.locator('td.harness').innerText(), 'solo-harness');
  assert.equal(await page.locator(`${rows}[data-run-id^="demo-run-"]`).count(), 2, 'the demo sessions name their run');
  assert.equal(await page.locator(looseRows).getAttribute('data-trace-id'), loose, 'the call without a session is listed');
  await shoot(beside('list'));
  console.log(`UI sessions list screenshot: ${beside('list')}`);

  await page.selectOption('select.run-filter', 'none');
  await matches(rows, 1);
  assert.equal(await page.locator(rows).getAttribute('data-session-id'), sessionId, '"without a run" keeps only it');

  // ---- the time range ----
  await page.selectOption('select.range', 'custom');
  await page.locator('input.range-from').fill('2001-01-01T00:00');
  await page.locator('input.range-to').fill('2001-01-02T00:00');
  await page.locator('.sessions-box p.empty', { hasText: 'No session matches' }).waitFor();
  await page.locator('.loose-box p.empty', { hasText: 'Every call in this time range has a session' }).waitFor();
  await page.selectOption('select.range', '15m');
  await matches(rows, 1);
  await matches(looseRows, 1);
  await page.selectOption('select.run-filter', '');
  await matches(rows, 3);
  await page.selectOption('select.range', 'all');

  // ---- the session: its steps as a tree and a waterfall ----
  await solo.locator('td.id a').click();
  await page.waitForURL(/#\/session\//);
  await page.locator('svg.waterfall g.bar').first().waitFor();
  assert.match(await text('h1'), new RegExp(`session ${sessionId}`));
  assert.match(await text('#crumbs'), /Sessions/);
  // Its feedback (posted by the test, on the session and on step 1).
  await matches('table.feedback-items tbody tr', 2);
  const feedbackRows = await page.$$eval('table.feedback-items tbody tr',
    (trs) => trs.map((tr) => [...tr.children].slice(0, 3).map((td) => td.innerText)));
  assert.deepEqual(feedbackRows[0], ['reward', '0.75', 'session']);
  assert.equal(feedbackRows[1][0], 'pass@1');
  assert.equal(feedbackRows[1][1], 'true');
  assert.match(feedbackRows[1][2], /^call /);
  assert.equal(await count('ul.tree > li.session'), 1);
  const tree = () => page.$$eval('ul.tree li.call', (items) => items.map((li) => {
    const up = li.parentElement.closest('li.call');
    return {
      trace: li.dataset.traceId, step: li.dataset.step, status: li.dataset.status, operation: li.dataset.operation,
      treeParent: up ? up.dataset.traceId : null,
      attempts: [...li.querySelectorAll(':scope > ul.attempts > li.attempt')].map((a) => ({ trace: a.dataset.traceId, status: a.dataset.status })),
    };
  }));
  const steps = await tree();
  assert.deepEqual(steps.map((c) => c.step), ['1', '2', '3'], 'three steps; the calls without a model are hidden');
  assert.ok(steps.every((c) => c.operation === 'chat'));
  assert.deepEqual(steps.map((c) => c.trace), [step1, step2[2], step3], 'a step is shown by its last attempt');
  assert.equal(steps[1].treeParent, step1, 'step 2 hangs under step 1');
  assert.equal(steps[2].treeParent, step2[2], 'step 3 hangs under step 2');
  assert.equal(steps[1].status, 'ok', 'the retried step has its last attempt\'s outcome');
  assert.deepEqual(steps[1].attempts, [
    { trace: step2[0], status: 'error' }, { trace: step2[1], status: 'error' }, { trace: step2[2], status: 'ok' },
  ], 'its three attempts are listed under it');
  assert.match(await page.locator('li.call[data-step="2"] > a.node').innerText(), /3 attempts/);

  const bars = () => page.$$eval('svg.waterfall g.bar', (gs) => gs.map((g) => ({
    trace: g.dataset.traceId, step: g.dataset.step, cls: g.getAttribute('class'),
    retries: [...g.querySelectorAll('rect.retry')].map((r) => r.dataset.traceId),
  })));
  const rowsDrawn = await bars();
  assert.deepEqual(rowsDrawn.map((b) => b.trace), [step1, step2[2], step3], 'one waterfall row per step');
  assert.deepEqual(rowsDrawn[1].retries, [step2[0], step2[1]], 'the earlier attempts are drawn in the step\'s row');
  assert.match(rowsDrawn[1].cls, /\bok\b/);
  assert.match(await text('.cards'), /retried steps/);
  await shoot(screenshot);
  console.log(`UI sessions screenshot: ${screenshot}`);

  // ---- calls without a model: shown when asked for ----
  assert.match(await text('.other-toggle'), /other calls \(2\)/);
  await page.locator('input.show-other').check();
  await matches('ul.tree li.call', 5);
  const all = await tree();
  const shown = all.filter((c) => c.operation === 'other').map((c) => c.trace).sort();
  assert.deepEqual(shown, [...others].sort(), 'the model list and the token count are shown as other');
  assert.equal(await count('svg.waterfall g.bar.other'), 2);
  assert.match(await text('ul.tree li.call.other'), /other\s+GET \/v1\/models/);
  await shoot(beside('other'));
  console.log(`UI sessions other-calls screenshot: ${beside('other')}`);
  await page.locator('input.show-other').uncheck();
  await matches('ul.tree li.call', 3);

  // ---- a call: previous and next step, attempts ----
  // The step navigation of the call with trace id `id`, once drawn.
  const navOf = (id, part) => page.locator(`nav.step-nav[data-trace-id="${id}"] ${part}`).waitFor();
  await page.locator('li.call[data-step="1"] > a.node').click();
  await navOf(step1, '.position');
  assert.match(await text('h1'), /step 1 · chat mock-model/);
  assert.match(await text('nav.step-nav .position'), /step 1 · 1 of 3/);
  assert.equal(await count('nav.step-nav .prev.disabled'), 1, 'step 1 has no previous step');

  const next = async (id) => {
    await page.locator('nav.step-nav a.next').click();
    await navOf(id, '.position');
  };
  const prev = async (id) => {
    await page.locator('nav.step-nav a.prev').click();
    await navOf(id, '.position');
  };
  await next(step2[2]);
  assert.match(await text('h1'), /step 2/);
  assert.match(await text('nav.step-nav .position'), /2 of 3/);
  assert.match(await text('nav.step-nav .attempts-nav'), /attempt 3 of 3/);
  assert.equal(await count('nav.step-nav a.attempt'), 2, 'links to the two earlier attempts');
  await next(step3);
  assert.match(await text('h1'), /step 3/);
  assert.equal(await count('nav.step-nav .next.disabled'), 1, 'step 3 is the last');
  await prev(step2[2]);
  await page.locator(`nav.step-nav a.attempt[data-trace-id="${step2[0]}"]`).click();
  await navOf(step2[0], '.attempts-nav');
  assert.match(await text('nav.step-nav .attempts-nav'), /attempt 1 of 3/);
  assert.match(await text('h1'), /error 500/, 'the first attempt failed with a 500');
  await prev(step1);

  // ---- copying ids ----
  await next(step2[2]);
  const copy = page.locator(`dl.facts button.copy[data-copy="${step2[2]}"]`);
  await copy.click();
  await page.locator(`dl.facts button.copy.copied[data-copy="${step2[2]}"]`).waitFor();
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), step2[2], 'the trace id is on the clipboard');
  await page.locator(`dl.facts button.copy[data-copy="${sessionId}"]`).click();
  await page.locator(`dl.facts button.copy.copied[data-copy="${sessionId}"]`).waitFor();
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), sessionId, 'the session id is on the clipboard');
  assert.equal(await count('dl.facts button.copy'), 3, 'trace id, session id and span id have copy buttons');
  await shoot(beside('call'));
  console.log(`UI sessions call screenshot: ${beside('call')}`);

  // ---- a run's steps leave out its calls without a model too ----
  await page.goto(`${gateway}/ui/#/run/${runId}`);
  await page.locator('svg.waterfall g.bar').first().waitFor();
  await matches('ul.tree li.call', 6);
  assert.equal(await count(`ul.tree li.call[data-trace-id="${runOther}"]`), 0, 'the model list is not a step');
  assert.equal(await count('svg.waterfall g.bar.other'), 0);
  assert.match(await text('.other-toggle'), /other calls \(1\)/);
  await page.locator('input.show-other').check();
  await matches(`ul.tree li.call.other[data-trace-id="${runOther}"]`, 1);
  await matches('ul.tree li.call', 7);
  await page.locator('input.show-other').uncheck();
  await matches('ul.tree li.call', 6);

  assert.deepEqual(problems, [], 'the page logged no errors');
  console.log('UI sessions browser test passed');
} catch (error) {
  const failure = beside('failure');
  await shoot(failure).catch(() => {});
  console.log(`UI sessions failure screenshot: ${failure}`);
  if (problems.length) console.log(`page problems:\n${problems.join('\n')}`);
  throw error;
} finally {
  await browser.close();
}

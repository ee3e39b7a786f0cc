// Browser test of tracegate's web UI, in Debian's chromium via playwright-core.
//
// Run by tests/ui.rs after `tracegate demo` recorded one run (two sessions,
// three steps each, every step's parent being the previous step) and
// `tracegate serve` was started on that database in front of a mock model.
// It walks the UI as a person would: the runs list, the run (its session
// tree and waterfall), a call (messages, answer, usage, raw), a parent link,
// and a call made while the page is open showing up without a reload.
//
// Environment:
//   GATEWAY_URL  the gateway, e.g. http://127.0.0.1:9090 (required)
//   SCREENSHOT   where to save the run view's screenshot (default
//                ui-screenshot.png); the call view goes beside it (-call.png)
//   CHROMIUM     the browser binary (default /usr/bin/chromium)
import assert from 'node:assert/strict';
import path from 'node:path';
import { chromium } from 'playwright-core';

const gateway = process.env.GATEWAY_URL;
assert.ok(gateway, 'GATEWAY_URL must name the gateway to test');
const screenshot = path.resolve(process.env.SCREENSHOT || 'ui-screenshot.png');
const callScreenshot = screenshot.replace(/(\.png)?$/, '-call.png');

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
});
const page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
page.setDefaultTimeout(15000);
// Any script error or CSP violation in the page fails the test.
const problems = [];
page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
page.on('console', (message) => { if (message.type() === 'error') problems.push(`console: ${message.text()}`); });

const text = (selector) => page.locator(selector).first().innerText();
// A full-page screenshot from the top (so the sticky header stays on top).
async function shoot(file) {
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: file, fullPage: true });
}

try {
  // ---- the runs list ----
  await page.goto(`${gateway}/ui`);
  assert.match(page.url(), /\/ui\/(#.*)?$/, '/ui redirects to /ui/');
  const runRow = page.locator('table.runs tbody tr').filter({ hasText: 'demo-run-' });
  await runRow.first().waitFor();
  assert.equal(await runRow.count(), 1, 'one demo run is listed');
  const runId = await runRow.getAttribute('data-run-id');
  assert.equal(await runRow.locator('td.sessions').innerText(), '2');
  assert.equal(await runRow.locator('td.calls').innerText(), '6');
  assert.equal(await runRow.locator('td.errors').innerText(), '0');
  await page.locator('figure.chart-box svg.chart rect').first().waitFor();
  assert.equal(await page.locator('figure.chart-box').count(), 4, 'four charts on the home page');
  assert.match(await text('table.models'), /mock-model/);
  assert.equal(await page.locator('table.calls tbody tr').count(), 6, 'the latest calls are listed');

  // ---- the run: session tree and waterfall ----
  await runRow.locator('a').click();
  await page.waitForURL(/#\/run\//);
  await page.locator('svg.waterfall g.bar').first().waitFor();
  const tree = await page.$$eval('ul.tree > li.session', (sessions) => sessions.map((s) => ({
    session: s.dataset.session,
    calls: [...s.querySelectorAll('li.call')].map((li) => {
      const up = li.parentElement.closest('li.call');
      return { trace: li.dataset.traceId, step: li.dataset.step, parent: li.dataset.parent, treeParent: up ? up.dataset.traceId : null };
    }),
  })));
  assert.deepEqual(tree.map((s) => s.session), [`${runId}-session-1`, `${runId}-session-2`]);
  for (const session of tree) {
    assert.deepEqual(session.calls.map((c) => c.step), ['1', '2', '3'], `${session.session}: steps 1, 2, 3`);
    const [first, second, third] = session.calls;
    assert.equal(first.treeParent, null, 'step 1 is a root of its session');
    assert.equal(second.treeParent, first.trace, 'step 2 hangs under step 1');
    assert.equal(second.parent, first.trace, "step 2's parent id is step 1");
    assert.equal(third.treeParent, second.trace, 'step 3 hangs under step 2');
  }

  const bars = await page.$$eval('svg.waterfall g.bar', (gs) => gs.map((g) => {
    const span = g.querySelector('rect.span');
    const tick = g.querySelector('line.ttft');
    return {
      session: g.dataset.session, step: g.dataset.step, trace: g.dataset.traceId, cls: g.getAttribute('class'),
      x: Number(span.getAttribute('x')), width: Number(span.getAttribute('width')), tick: tick ? Number(tick.getAttribute('x1')) : null,
    };
  }));
  assert.equal(await page.locator('svg.waterfall g.session-row').count(), 2, 'one waterfall group per session');
  assert.equal(bars.length, 6, 'one waterfall bar per call');
  for (const session of tree) {
    const rows = bars.filter((b) => b.session === session.session);
    assert.deepEqual(rows.map((b) => b.step), ['1', '2', '3'], `${session.session}: waterfall rows in step order`);
    assert.deepEqual(rows.map((b) => b.trace), session.calls.map((c) => c.trace), 'the waterfall and the tree show the same calls');
    assert.ok(rows[0].x <= rows[1].x && rows[1].x <= rows[2].x, 'each step starts after the previous one');
    const streamed = rows[2];
    assert.ok(streamed.tick !== null, 'the streamed step has a first-token tick');
    assert.ok(streamed.tick >= streamed.x && streamed.tick <= streamed.x + streamed.width, 'the tick lies on its bar');
  }
  assert.ok(bars.every((b) => /\bok\b/.test(b.cls)), 'no bar is marked as an error');
  assert.equal(await page.locator('svg.waterfall g.bar.error').count(), 0);
  await shoot(screenshot);
  console.log(`UI screenshot: ${screenshot}`);

  // ---- a call: the streamed third step of session 1 ----
  const session1 = page.locator('ul.tree > li.session').first();
  await session1.locator('li.call[data-step="3"] > a.node').click();
  await page.waitForURL(/#\/call\//);
  await page.locator('.messages .msg').first().waitFor();
  assert.match(await text('h1'), /step 3 · chat mock-model/);
  const messages = await page.locator('.messages .msg').allInnerTexts();
  assert.equal(messages.length, 5, 'step 3 was sent five messages');
  assert.match(messages[0], /user[\s\S]*Find why the nightly build is red/i);
  assert.match(messages[3], /tool call[\s\S]*search_docs/, 'the assistant tool call is shown');
  assert.match(messages[4], /tool[\s\S]*3 results found/i);
  assert.match(await text('.answer'), /This is the tracegate mock answering: Go on\./);
  assert.match(await text('.usage'), /input_tokens\s+13/);
  assert.match(await text('dl.facts'), /streamed/);
  await page.locator('details.panel summary', { hasText: 'Raw request and response' }).click();
  const raw = await page.locator('.raw-block pre').allInnerTexts();
  assert.match(raw[1], /"stream": true/, 'the raw request body is shown');
  assert.match(raw[3], /^data: /m, 'the raw SSE response is shown');
  await shoot(callScreenshot);
  console.log(`UI call screenshot: ${callScreenshot}`);

  // ---- its parent: step 2, the tool call ----
  await page.locator('dl.facts a', { hasText: tree[0].calls[1].trace }).click();
  await page.waitForURL(new RegExp(tree[0].calls[1].trace));
  await page.locator('.answer .toolcall').waitFor();
  assert.match(await text('h1'), /step 2/);
  assert.match(await text('.answer'), /search_docs[\s\S]*Go on\./);

  // ---- live: a call made now shows up in the open run without a reload ----
  await page.locator('#crumbs a', { hasText: runId }).click();
  await page.locator('ul.tree > li.session').nth(1).waitFor();
  const answer = await fetch(`${gateway}/v1/chat/completions`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      authorization: 'Bearer sk-ui-test-secret',
      'x-rllm-run-id': runId,
      'x-rllm-session-id': `${runId}-session-live`,
      'x-rllm-step-id': '1',
    },
    body: JSON.stringify({ model: 'mock-model', messages: [{ role: 'user', content: 'Arrive live' }] }),
  });
  assert.equal(answer.status, 200);
  const liveId = answer.headers.get('x-rllm-trace-id');
  await page.locator(`ul.tree li.call[data-trace-id="${liveId}"]`).waitFor();
  assert.equal(await page.locator('ul.tree > li.session').count(), 3, 'the new session joined the tree');
  assert.equal(await page.locator('svg.waterfall g.bar').count(), 7, 'and the waterfall');

  // ---- credentials are never shown ----
  await page.locator(`ul.tree li.call[data-trace-id="${liveId}"] > a.node`).click();
  await page.locator('.answer').waitFor();
  assert.match(await text('.answer'), /This is the tracegate mock answering: Arrive live/);
  const content = await page.locator('#view').textContent();
  assert.match(content, /authorization: \[REDACTED\]/);
  assert.ok(!content.includes('sk-ui-test-secret'), 'the caller\'s key is not in the page');

  assert.deepEqual(problems, [], 'the page logged no errors');
  console.log('UI browser test passed');
} catch (error) {
  const failure = screenshot.replace(/(\.png)?$/, '-failure.png');
  await shoot(failure).catch(() => {});
  console.log(`UI failure screenshot: ${failure}`);
  if (problems.length) console.log(`page problems:\n${problems.join('\n')}`);
  throw error;
} finally {
  await browser.close();
}

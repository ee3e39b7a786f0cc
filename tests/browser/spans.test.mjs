// Browser test of a session whose harness sent its own OpenTelemetry spans
// (POST /v1/traces): the spans and the LLM calls drawn as one tree (by
// parent links: a span under its parent span, a call under the span its
// `traceparent` named) and one timeline, tool spans drawn distinctly (their
// own colour and shape, a "tool" label, a legend), and a span's attributes,
// events, status, resource and duration in its pane on click.
//
// Run by tests/ui.rs after it recorded, through the gateway, an episode:
// `invoke_agent solver` with two calls under it (CALLS[0], CALLS[2]);
// inside it `execute_tool ls`, with one call under it (CALLS[1]), and
// `execute_tool pytest`, failed ("exit code 1"), with none; and, after the
// agent step, a call without `traceparent` (CALLS[3]). Another harness
// process sent an `evaluate reward` span in a session of its own that has
// no calls (SPAN_ONLY_SESSION).
//
// Environment:
//   GATEWAY_URL  the gateway (required)
//   SESSION_ID   the episode's session
//   AGENT, TOOL_LS, TOOL_TEST  the span ids
//   CALLS        the four calls' trace ids, comma-separated, in that order
//   SPAN_ONLY_SESSION  the session only a span names
//   SCREENSHOT   where to save the session page's screenshot (the span
//                pane open); beside it the call page (-call.png)
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
const agent = env('AGENT');
const toolLs = env('TOOL_LS');
const toolTest = env('TOOL_TEST');
const [underAgent, insideLs, lastCall, loose] = env('CALLS').split(',');
const spanOnly = env('SPAN_ONLY_SESSION');
const screenshot = path.resolve(process.env.SCREENSHOT || 'ui-spans-screenshot.png');
const beside = (suffix) => screenshot.replace(/(\.png)?$/, `-${suffix}.png`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
});
const context = await browser.newContext({ viewport: { width: 1440, height: 1000 } });
const page = await context.newPage();
page.setDefaultTimeout(15000);
const problems = [];
page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
page.on('console', (message) => { if (message.type() === 'error') problems.push(`console: ${message.text()}`); });
// What the page asked the gateway for (the session page must not fetch per node).
const asked = [];
page.on('request', (request) => asked.push(new URL(request.url()).pathname));

const text = (selector) => page.locator(selector).first().innerText();
const count = (selector) => page.locator(selector).count();
async function shoot(file) {
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: file, fullPage: true });
}

try {
  await page.goto(`${gateway}/ui/#/session/${encodeURIComponent(sessionId)}`);
  await page.locator(`ul.tree li.span[data-span-id="${agent}"]`).waitFor();
  await page.locator('svg.waterfall g.bar.harness').first().waitFor();

  // ---- one tree: every node with the node it hangs under ----
  const tree = await page.$$eval('ul.tree li.span, ul.tree li.call', (items) => items.map((li) => {
    const up = li.parentElement.closest('li.span, li.call, li.session');
    const id = (el) => (el.classList.contains('span') ? el.dataset.spanId : el.classList.contains('call') ? el.dataset.traceId : 'session');
    return { id: id(li), kind: li.classList.contains('span') ? li.dataset.kind : 'call', parent: id(up) };
  }));
  assert.deepEqual(tree, [
    { id: agent, kind: 'agent', parent: 'session' },
    { id: underAgent, kind: 'call', parent: agent },
    { id: toolLs, kind: 'tool', parent: agent },
    { id: insideLs, kind: 'call', parent: toolLs },
    { id: toolTest, kind: 'tool', parent: agent },
    { id: lastCall, kind: 'call', parent: agent },
    { id: loose, kind: 'call', parent: 'session' },
  ], 'the agent step encloses its calls and tool spans, in start order; a call without a span is a root');
  assert.match(await text(`li.span[data-span-id="${toolTest}"] > button.node`), /TOOL\s+tool pytest\s+error/i);
  assert.match(await text(`li.span[data-span-id="${agent}"] > button.node`), /AGENT\s+agent solver/i);
  assert.match(await text('.tree .session-node'), /3 harness spans/);
  assert.match(await text('.cards'), /harness spans/);
  assert.match(await text('.cards'), /tool spans/);
  assert.ok(asked.includes(`/ui/api/sessions/${sessionId}/spans`), 'the spans come in one request');
  assert.deepEqual(asked.filter((p) => p.startsWith('/traces/')), [], 'no request per call');

  // ---- one timeline, tool spans drawn distinctly ----
  const rows = await page.$$eval('svg.waterfall g.bar', (gs) => gs.map((g) => {
    const shape = g.querySelector('rect.shape, rect.span');
    const style = getComputedStyle(shape);
    return {
      id: g.dataset.spanId || g.dataset.traceId,
      cls: g.getAttribute('class'),
      label: g.querySelector('text.row-label').textContent,
      indent: Number(g.querySelector('text.row-label').getAttribute('x')),
      fill: style.fill,
      stroke: style.stroke,
      rx: Number(shape.getAttribute('rx')),
    };
  }));
  assert.deepEqual(rows.map((r) => r.id), [agent, underAgent, toolLs, insideLs, toolTest, lastCall, loose],
    'one row per span and call, depth first');
  const row = (id) => rows.find((r) => r.id === id);
  for (const id of [toolLs, toolTest]) {
    assert.match(row(id).cls, /\bharness\b.*\btool\b/, 'a tool span row');
    assert.equal(row(id).fill, 'rgb(13, 148, 136)', 'tool spans are teal');
    assert.ok(row(id).rx >= 5, 'tool spans are pills');
  }
  assert.match(row(toolLs).label, /^tool ls$/);
  assert.match(row(toolTest).label, /^tool pytest$/);
  assert.match(row(toolTest).cls, /\bspan-error\b/);
  assert.equal(row(toolTest).stroke, 'rgb(220, 38, 38)', 'a failed span is outlined in red');
  assert.match(row(agent).cls, /\bharness\b.*\bagent\b/);
  assert.equal(row(agent).stroke, 'rgb(71, 85, 105)', 'the agent step is an outlined bracket');
  assert.equal(row(agent).label, 'agent solver');
  for (const id of [underAgent, insideLs, lastCall, loose]) {
    assert.equal(row(id).fill, 'rgb(59, 130, 246)', 'calls keep their blue bars');
  }
  assert.ok(row(insideLs).indent > row(toolLs).indent && row(toolLs).indent > row(agent).indent,
    'labels are indented by the spans enclosing them');
  const legend = await text('.legend-box .legend');
  for (const item of ['agent span', 'tool span', 'other span', 'span with error']) assert.match(legend, new RegExp(item));

  // ---- a span's pane ----
  assert.equal(await count('section.span-detail:not([hidden])'), 0, 'no pane until a span is clicked');
  await page.locator(`li.span[data-span-id="${toolTest}"] > button.node`).click();
  const pane = page.locator(`section.span-detail[data-span-id="${toolTest}"]:not([hidden])`);
  await pane.waitFor();
  assert.match(await pane.locator('h2').innerText(), /execute_tool pytest\s+error/);
  const facts = await pane.locator('dl.facts').innerText();
  assert.match(facts, /Status\s+error · exit code 1/);
  assert.match(facts, /Duration\s+\d/);
  assert.match(facts, /Calls under it\s+none/);
  assert.match(facts, new RegExp(`Span id\\s+${toolTest}`));
  assert.match(facts, new RegExp(`Parent span\\s+${agent}`));
  const kv = (table) => pane.locator(table).evaluate((t) => Object.fromEntries([...t.querySelectorAll(':scope > tbody > tr')]
    .map((tr) => [tr.querySelector('th').innerText, tr.querySelector('td').innerText])));
  const attributes = await kv('h3:has-text("Attributes") + table.kv');
  assert.equal(attributes['gen_ai.tool.name'], 'pytest');
  assert.equal(attributes['tool.command'], 'pytest -x tests/');
  assert.match(await pane.locator('table.events > tbody > tr').innerText(), /exit[\s\S]*code\s+1/);
  const resource = await kv('h3:has-text("Resource") + table.kv');
  assert.equal(resource['service.name'], 'ui-harness');
  assert.equal(resource['session.id'], sessionId);
  assert.equal(await count(`ul.tree li.span[data-span-id="${toolTest}"] > button.node.selected`), 1, 'the clicked span is marked');
  await shoot(screenshot);
  console.log(`UI spans screenshot: ${screenshot}`);

  // The waterfall's bars open the pane too; it lists the calls under the span.
  await page.locator(`svg.waterfall g.bar.harness[data-span-id="${agent}"] text.row-label`).click();
  const agentPane = page.locator(`section.span-detail[data-span-id="${agent}"]:not([hidden])`);
  await agentPane.waitFor();
  assert.deepEqual(await agentPane.locator('dd a.id[href^="#/call/"]').evaluateAll((as) => as.map((a) => a.textContent)),
    [underAgent, lastCall], 'the agent step\'s own calls');
  await agentPane.locator('button.close').click();
  await page.locator('section.span-detail[hidden]').waitFor({ state: 'attached' });

  // ---- a call under a span names it ----
  await page.locator(`li.call[data-trace-id="${insideLs}"] > a.node`).click();
  await page.waitForURL(/#\/call\//);
  await page.locator('dl.facts dt', { hasText: 'Within' }).waitFor();
  assert.match(await text('dl.facts'), new RegExp(`Within\\s+tool\\s+execute_tool ls\\s+span ${toolLs}`, 'i'));
  await shoot(beside('call'));
  console.log(`UI spans call screenshot: ${beside('call')}`);

  assert.deepEqual(problems, [], 'the page logged no errors');

  // ---- a session only a span names: its page draws the span ----
  // The store has no row for it: the page's GET /sessions/<id> is a 404,
  // which the browser logs, and the page takes as "no calls yet".
  const before = problems.length;
  await page.goto(`${gateway}/ui/#/session/${encodeURIComponent(spanOnly)}`);
  await page.locator('svg.waterfall g.bar.harness.generic').waitFor();
  assert.equal(await count('ul.tree li.span[data-kind="generic"]'), 1);
  assert.match(await text('ul.tree li.span > button.node'), /SPAN\s+evaluate reward/i);
  assert.equal(await count('ul.tree li.call'), 0);
  assert.equal(await count('.panel.failure'), 0, 'not a "not found" page');
  const unexpected = problems.slice(before).filter((p) => !/Failed to load resource: .* 404/.test(p));
  assert.deepEqual(unexpected, [], 'the page logged no other errors');
  console.log('UI spans browser test passed');
} catch (error) {
  const failure = beside('failure');
  await shoot(failure).catch(() => {});
  console.log(`UI spans failure screenshot: ${failure}`);
  if (problems.length) console.log(`page problems:\n${problems.join('\n')}`);
  throw error;
} finally {
  await browser.close();
}

// End-to-end test of the mapping debugger page in a real browser: Debian's chromium, driven by
// playwright-core. Playwright never downloads a browser here: `executablePath` is the system
// chromium, and playwright-core has no install step.
//
// Usage: node ui.test.mjs <page-url> <api-key>
//   e.g. node ui.test.mjs http://127.0.0.1:8182/ui/ "$(cat key)"
// Screenshots go to $IOMT_SCREENSHOTS_DIR (default: docs/screenshots of this repository).
// Exit status 0 when every step passed, 1 when a step failed (the message says which; a
// screenshot of the failure is saved as iomt-ui-failure.png in the temporary directory), 2 when the setup is missing.
//
// Started by crates/iomt/tests/ui_browser.rs, which runs `iomt ui` on a free loopback port.

import { existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const CHROMIUM = process.env.IOMT_CHROMIUM || '/usr/bin/chromium';
const LAUNCH_FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
const TIMEOUT_MS = 15000;

const [url, apiKey] = process.argv.slice(2);
if (!url || !apiKey) {
  console.error('usage: node ui.test.mjs <page-url> <api-key>');
  process.exit(2);
}
if (!existsSync(CHROMIUM)) {
  console.error(`no chromium at ${CHROMIUM}: install it with \`apt-get install -y chromium\` (or set IOMT_CHROMIUM)`);
  process.exit(2);
}
let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch {
  console.error('playwright-core is not installed: run `npm ci` in test-peers/browser');
  process.exit(2);
}

const here = dirname(fileURLToPath(import.meta.url));
const shots = resolve(process.env.IOMT_SCREENSHOTS_DIR || join(here, '../../docs/screenshots'));
mkdirSync(shots, { recursive: true });

let step = 'launch';
function expect(condition, message) {
  if (!condition) throw new Error(message);
}

const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: LAUNCH_FLAGS });
const page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
page.setDefaultTimeout(TIMEOUT_MS);
const consoleErrors = [];
// The wrong-key step makes the browser log the 401 it received; anything else is a failure.
page.on('console', (m) => { if (m.type() === 'error' && !m.text().includes('status of 401')) consoleErrors.push(m.text()); });
page.on('pageerror', (e) => consoleErrors.push(String(e)));
const refused = [];
page.on('response', (r) => { if (r.status() === 401) refused.push(r.url()); });
const external = [];
page.on('request', (r) => { if (!r.url().startsWith(new URL(url).origin)) external.push(r.url()); });

const deviceText = () => page.locator('#device-editor textarea').inputValue();
const runs = () => page.evaluate(() => Number(document.body.dataset.runs || 0));
async function waitForRunAfter(before) {
  await page.waitForFunction((n) => Number(document.body.dataset.runs || 0) > n, before);
}

try {
  step = 'the page asks for the api key';
  await page.goto(url);
  await page.locator('#key-dialog').waitFor({ state: 'visible' });
  await page.screenshot({ path: join(shots, 'api-key.png') });

  step = 'the key loads the wearable example and its Observations';
  await page.fill('#key-input', apiKey);
  await page.click('#key-submit');
  await page.waitForSelector('body[data-ready="true"]');
  await page.waitForSelector('.card.observation');
  expect((await deviceText()).includes('"typeName": "heartrate"'), 'the wearable example is not in the device editor');
  expect(await page.locator('#device-problems li.ok').count() === 1, 'the example should have no device mapping problem');
  expect(refused.length === 0, `requests refused with the right key: ${refused.join(', ')}`);
  await page.screenshot({ path: join(shots, 'overview.png'), fullPage: true });

  step = 'a broken device mapping shows its error at its line';
  const original = await deviceText();
  const broken = original.replace('"typeName": "heartrate"', '"typeNam": "heartrate"');
  const brokenLine = broken.split('\n').findIndex((l) => l.includes('"typeNam"')) + 1;
  expect(brokenLine > 0, 'could not break the mapping');
  let before = await runs();
  await page.fill('#device-editor textarea', broken);
  await waitForRunAfter(before);
  await page.waitForSelector(`#device-editor .gutter .ln.has-error[data-line="${brokenLine}"]`);
  const problem = page.locator(`#device-problems li.error[data-line="${brokenLine}"]`);
  expect((await problem.count()) >= 1, `no problem listed at line ${brokenLine}`);
  expect((await problem.first().textContent()).includes('typeNam'), 'the problem does not name the misspelt field');

  step = 'clicking the problem moves the caret to its line';
  await problem.first().click();
  const caretLine = await page.locator('#device-editor textarea').evaluate((t) => t.value.slice(0, t.selectionStart).split('\n').length);
  expect(caretLine === brokenLine, `the caret is on line ${caretLine}, not ${brokenLine}`);
  await page.waitForTimeout(1600); // let the line's flash fade before the screenshots
  await page.locator('.mappings .pane').first().screenshot({ path: join(shots, 'mapping-error.png') });
  await page.screenshot({ path: join(shots, 'mapping-error-page.png') });

  step = 'the fixed mapping gives the heart-rate Observation and its chart';
  before = await runs();
  await page.fill('#device-editor textarea', original);
  await waitForRunAfter(before);
  expect(await page.locator('#device-editor .gutter .ln.has-error').count() === 0, 'error marks remain after the fix');
  const heartRate = page.locator('.card.observation', { hasText: '8867-4' });
  expect((await heartRate.count()) >= 1, 'no heart-rate Observation (LOINC 8867-4)');
  await page.waitForSelector('#chart figure[data-type="heartrate"] svg circle.point');
  const bp = page.locator('#chart figure[data-type="bloodpressure"] .legend');
  expect((await bp.textContent()).includes('Systolic'), 'the blood-pressure chart has no systolic component series');
  await page.locator('.results-pane').screenshot({ path: join(shots, 'observation-chart.png') });

  step = 'results update as a message is typed';
  const messageCount = await page.locator('.card.message').count();
  before = await runs();
  await page.click('#messages-editor textarea');
  await page.keyboard.press('Control+End');
  await page.keyboard.type('\n{"deviceId":"wristband-0001","patientId":"patient-0001","endDate":"2026-11-26T08:30:00Z","heartRate":91}');
  await waitForRunAfter(before);
  await page.waitForFunction((n) => document.querySelectorAll('.card.message').length === n + 1, messageCount);
  const last = page.locator('.card.message').last();
  expect((await last.textContent()).includes('hr=91'), 'the typed message did not produce its measurement');

  step = 'the envelope and identity options reach the report';
  before = await runs();
  await page.selectOption('#identity', 'lookup');
  await waitForRunAfter(before);
  expect((await heartRate.first().textContent()).includes('Patient-Reference-On-FHIR-Server'), 'identity lookup not applied');

  step = 'export downloads both mappings as edited';
  const downloads = [];
  page.on('download', (d) => downloads.push(d));
  await page.click('#export');
  for (let i = 0; i < 50 && downloads.length < 2; i++) await page.waitForTimeout(100);
  const names = downloads.map((d) => d.suggestedFilename()).sort();
  expect(names.join(',') === 'devicecontent.json,fhirmapping.json', `downloads: ${names.join(',') || 'none'}`);
  const exported = await downloads.find((d) => d.suggestedFilename() === 'devicecontent.json').path();
  const { readFileSync } = await import('node:fs');
  expect(readFileSync(exported, 'utf8') === original, 'the exported device mapping differs from the editor');

  step = 'a day of readings, uploaded, is tested and charted';
  const day = Array.from({ length: 8640 }, (_, i) => JSON.stringify({
    deviceId: 'wristband-0001', patientId: 'patient-0001',
    endDate: new Date(Date.UTC(2026, 10, 26) + i * 10000).toISOString(), heartRate: 60 + (i % 40),
  })).join('\n');
  before = await runs();
  await page.setInputFiles('#messages-file', { name: 'day.ndjson', mimeType: 'application/x-ndjson', buffer: Buffer.from(day) });
  await waitForRunAfter(before);
  await page.waitForFunction(() => document.querySelector('#summary').textContent.startsWith('8640 message(s)'));
  await page.waitForSelector('#chart figure[data-type="heartrate"] svg path.series');
  expect((await page.locator('#messages-hidden').textContent()).startsWith('8540 more'), 'the message list is not limited');

  step = 'a forgotten key is asked again, and a wrong one refused';
  await page.click('#sign-out');
  await page.selectOption('#identity', 'create');
  await page.locator('#key-dialog').waitFor({ state: 'visible' });
  await page.fill('#key-input', 'not-the-key');
  await page.click('#key-submit');
  await page.waitForFunction(() => document.querySelector('#key-error').textContent.includes('not accepted'));
  before = await runs();
  await page.fill('#key-input', apiKey);
  await page.click('#key-submit');
  await waitForRunAfter(before);
  expect(await page.locator('#key-dialog').isHidden(), 'the key dialog is still open');

  step = 'the guided example explains components';
  await page.click('#guide-open');
  await page.locator('#guide').waitFor({ state: 'visible' });
  for (let i = 0; i < 10 && !(await page.locator('#guide-title').textContent()).includes('Components'); i++) {
    await page.click('#guide-next');
  }
  expect((await page.locator('#guide-body').textContent()).includes('component'), 'the guide has no components step');
  await page.screenshot({ path: join(shots, 'guided-example.png') });

  step = 'the page made no request outside its origin and logged no error';
  expect(external.length === 0, `requests outside the page's origin: ${external.join(', ')}`);
  expect(consoleErrors.length === 0, `console errors: ${consoleErrors.join(' | ')}`);
  console.log(`ok: every step passed; screenshots in ${shots}`);
  await browser.close();
} catch (e) {
  console.error(`FAILED at step "${step}": ${String(e.message).slice(0, 1500)}`);
  const failure = join(tmpdir(), 'iomt-ui-failure.png');
  await page.screenshot({ path: failure, fullPage: true }).catch(() => {});
  console.error(`a screenshot of the failure is ${failure}`);
  await browser.close();
  process.exit(1);
}

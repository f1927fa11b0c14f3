/**
 * Headless Chromium for tests, through playwright-core and the Debian `chromium` package at
 * /usr/bin/chromium (no browser download). Tests that need it register through
 * testWithChromium, which ava reports as skipped (reason in the title) where the browser
 * is missing. Pages opened with openPage may not reach the network: every request that is
 * not file: or data: is aborted and recorded.
 */
import { existsSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import test, { type ImplementationFn } from 'ava';
import { type Browser, type Page, chromium } from 'playwright-core';

export const CHROMIUM_PATH = '/usr/bin/chromium';
export const CHROMIUM_PRESENT = existsSync(CHROMIUM_PATH);

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Registers a test that needs Chromium; without /usr/bin/chromium, ava reports it as skipped with the reason in its title. */
export function testWithChromium(title: string, fn: ImplementationFn<[]>): void {
  if (CHROMIUM_PRESENT) test.serial(title, fn);
  else test.serial.skip(`${title} (needs ${CHROMIUM_PATH}: apt-get install -y chromium)`, fn);
}

export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: CHROMIUM_ARGS, timeout: 60_000 });
}

/** What went wrong while a page was open. */
export interface PageProblems {
  readonly consoleErrors: string[];
  readonly pageErrors: string[];
  /** Requests the page tried to make beyond file: and data: (all aborted). */
  readonly networkRequests: string[];
  readonly failedRequests: string[];
}

/** Opens a local file in a new page of `browser` and waits for it to load; the page stays open. */
export async function openFile(
  browser: Browser,
  path: string,
  viewport = { width: 1280, height: 900 },
): Promise<{ page: Page; problems: PageProblems }> {
  const context = await browser.newContext({ viewport, offline: true });
  const page = await context.newPage();
  const problems: PageProblems = { consoleErrors: [], pageErrors: [], networkRequests: [], failedRequests: [] };
  page.on('console', (message) => {
    if (message.type() === 'error') problems.consoleErrors.push(message.text());
  });
  page.on('pageerror', (error) => problems.pageErrors.push(error.message));
  page.on('requestfailed', (request) => problems.failedRequests.push(`${request.url().slice(0, 200)}: ${request.failure()?.errorText}`));
  await page.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith('file:') || url.startsWith('data:')) return route.continue();
    problems.networkRequests.push(url);
    return route.abort();
  });
  await page.goto(pathToFileURL(path).href, { waitUntil: 'load' });
  return { page, problems };
}

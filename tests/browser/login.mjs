// Drives Debian's chromium (through playwright-core) the way a person uses Portcullis' login
// form, and prints what happened as one JSON line. Run by the Rust tests (tests/local_form.rs):
//
//   node tests/browser/login.mjs '{"url": "...", "user": "alice", "password": "...", "codes": ["123456"]}'
//
// Input (one JSON argument):
//   url       the page to open first (a protected page, or /.portcullis/login?rd=...)
//   user, password   typed into the sign-in form when it shows (`logins` times, default once)
//   codes     typed, in turn, into the second-step form each time it shows
//   then      URLs opened afterwards in the same browser (e.g. an mfa: true route)
//   cross_site { action, fields }: after opening `url`, a page of another origin (about:blank)
//             posts a form with these fields to `action`, as a login-CSRF attacker would
//   screenshot  a PNG path for the last page
// Output: { steps: [{ url, status, title, text, fields }], cookies: [names] }; `fields` are the
// names of the inputs of the page's form, `text` its visible text (cut to 4000 characters).
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const input = JSON.parse(process.argv[2] ?? '{}');
const profile = mkdtempSync(join(tmpdir(), 'portcullis-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
const steps = [];
let lastStatus = null;
try {
  const page = context.pages()[0] ?? await context.newPage();
  page.setDefaultTimeout(15000);
  page.on('response', (r) => {
    if (r.request().isNavigationRequest() && r.request().frame() === page.mainFrame()) {
      lastStatus = r.status();
    }
  });
  const record = async () => {
    await page.waitForLoadState('load');
    const fields = await page.$$eval('form input', (els) => els.map((e) => e.name));
    const text = (await page.evaluate(() => document.body ? document.body.innerText : '')) ?? '';
    steps.push({
      url: page.url(),
      status: lastStatus,
      title: await page.title(),
      text: text.slice(0, 4000),
      fields,
    });
  };
  const submit = async (selector) => {
    await Promise.all([
      page.waitForNavigation({ waitUntil: 'load' }),
      page.click(selector),
    ]);
    // A "Signed in, continuing" page moves on by itself (meta refresh): wait until the
    // navigations are over and the page stays.
    for (let i = 0; i < 20; i++) {
      await page.waitForLoadState('networkidle').catch(() => {});
      try {
        if (!(await page.$('meta[http-equiv="refresh"]'))) return;
      } catch {
        continue; // the page went away while looking at it: it moved on
      }
      await page.waitForTimeout(100);
    }
  };

  await page.goto(input.url, { waitUntil: 'load' });
  await record();

  if (input.cross_site) {
    const { action, fields } = input.cross_site;
    const inputs = Object.entries(fields ?? {})
      .map(([k, v]) => `<input type="hidden" name="${k}" value="${String(v).replace(/"/g, '&quot;')}">`)
      .join('');
    await page.goto('about:blank');
    await page.setContent(`<form method="post" action="${action}">${inputs}<button id="go">go</button></form>`);
    await submit('#go');
    await record();
  } else {
    let logins = input.logins ?? 1;
    const codes = [...(input.codes ?? [])];
    for (let i = 0; i < 10; i++) {
      if (logins > 0 && input.user !== undefined && await page.$('input[name="username"]')) {
        await page.fill('input[name="username"]', input.user);
        await page.fill('input[name="password"]', input.password ?? '');
        logins -= 1;
        await submit('button[type="submit"]');
        await record();
      } else if (codes.length > 0 && await page.$('input[name="code"]')) {
        await page.fill('input[name="code"]', codes.shift());
        await submit('button[type="submit"]');
        await record();
      } else {
        break;
      }
    }
  }
  for (const url of input.then ?? []) {
    await page.goto(url, { waitUntil: 'load' });
    await record();
  }
  if (input.screenshot) {
    await page.screenshot({ path: input.screenshot, fullPage: true });
  }
  const cookies = (await context.cookies()).map((c) => c.name);
  process.stdout.write(JSON.stringify({ steps, cookies }) + '\n');
} catch (e) {
  process.stdout.write(JSON.stringify({ steps, error: String(e && e.stack || e) }) + '\n');
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}

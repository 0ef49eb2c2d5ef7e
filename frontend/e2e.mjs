// The example frontend in a real browser (Debian's chromium, driven by playwright-core) against
// the running stack and its functions (dev/functions.sh up): people sign up on the page, the
// stack's Cognito runs the real trigger, the page polls GET /tenant and round-trips a message
// over its own vhost with Web-STOMP. Run by `make test`; alone: `node frontend/e2e.mjs`.
import { execFileSync } from "node:child_process";
import { readFileSync, existsSync } from "node:fs";
import { randomUUID } from "node:crypto";
import { chromium } from "playwright-core";

const root = new URL("..", import.meta.url).pathname;
function envFile(path) {
  if (!existsSync(path)) {
    console.error(`e2e: ${path} is missing: run 'make stack-up' and 'bash dev/functions.sh up'`);
    process.exit(1);
  }
  return Object.fromEntries(readFileSync(path, "utf8").split("\n")
    .filter((l) => l.startsWith("export ")).map((l) => l.slice(7).split(/=(.*)/s).slice(0, 2)));
}
const env = { ...envFile(`${root}.stack/env`), ...envFile(`${root}.stack/functions.env`) };
const operator = { ...env, ...envFile(`${root}.stack/operator.env`) };
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
if (!existsSync(executablePath)) {
  console.error(`e2e: no browser at ${executablePath}: apt-get install chromium (make test installs it)`);
  process.exit(1);
}

const results = [];
async function test(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    results.push(true);
    console.log(`ok - ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  } catch (e) {
    results.push(false);
    console.log(`not ok - ${name}\n  ${String(e.stack || e).split("\n").join("\n  ")}`);
  }
}
function assert(cond, message) { if (!cond) throw new Error(message); }

const browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });

// A person on the page, in a browser context of their own (own storage, own session).
async function person() {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on("pageerror", (e) => console.log(`  page error: ${e.message}`));
  await page.goto(env.STACK_FRONTEND_URL);
  const email = `e2e-${randomUUID()}@example.com`;
  await page.fill("#signup-email", email);
  await page.fill("#signup-password", "Correct-horse-battery-1!");
  await page.click("#signup-submit");
  await page.waitForSelector("#confirm:not([hidden])", { timeout: 15000 });
  const sub = await page.evaluate(() => window.tenantDemo.state.sub);
  return { page, context, email, sub };
}

async function confirmAndWait(p, step, timeout = 60000) {
  await p.page.fill("#confirm-code", "123456");
  await p.page.click("#confirm-submit");
  await p.page.waitForSelector(`#status[data-state="${step}"]`, { timeout });
}

async function fault(rule) {
  const r = await fetch(`${env.STACK_AWS_STANDIN}/_standin/faults`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(rule),
  });
  assert(r.ok, `fault rule refused: ${r.status}`);
}

let first;
await test("a person signs up on the page, the trigger gives them a tenant, a message goes through their vhost", async () => {
  first = await person();
  await confirmAndWait(first, "round-trip-ok");
  const state = await first.page.evaluate(() => window.tenantDemo.state);
  assert(state.tenant.vhost === first.sub, `vhost ${state.tenant.vhost} is not the user's sub ${first.sub}`);
  const text = await first.page.textContent("#round-trip");
  assert(text.includes(first.email), `the round trip shows another message: ${text}`);
  await first.page.screenshot({ path: `${root}.stack/functions/frontend-ready.png`, fullPage: true });
});

await test("a second person's page cannot reach the first person's vhost", async () => {
  assert(first, "the first test did not get a tenant");
  const second = await person();
  await confirmAndWait(second, "round-trip-ok");
  const mine = await second.page.evaluate(() => window.tenantDemo.state.tenant.vhost);
  assert(mine === second.sub && mine !== first.sub, `second person's vhost: ${mine}`);
  // The control: these credentials do connect (to their own vhost)...
  const own = await second.page.evaluate((v) => window.tenantDemo.tryVhost(v), mine);
  assert(own.ok, `own vhost refused: ${own.error}`);
  // ...and the broker refuses them on the first person's.
  const theirs = await second.page.evaluate((v) => window.tenantDemo.tryVhost(v), first.sub);
  assert(!theirs.ok, "the second person's credentials reached the first person's vhost");
  console.log(`  refused as expected: ${theirs.error}`);
  await second.context.close();
});

await test("a handed-off sign-up shows 'setting up your workspace' until the worker finishes it", async () => {
  const p = await person();
  // Secrets Manager refuses this tenant's secret: the trigger hands the tenant off.
  await fault({ target: "secretsmanager.CreateSecret", match: p.sub, count: 1000, status: 400, error: "AccessDeniedException" });
  try {
    await confirmAndWait(p, "provisioning", 30000);
    await p.page.waitForFunction(() => window.tenantDemo.state.history.filter((s) => s === "provisioning").length >= 2,
      null, { timeout: 30000 });
    const step = await p.page.evaluate(() => window.tenantDemo.state.step);
    assert(step === "provisioning", `expected to be waiting, got ${step}`);
    assert((await p.page.textContent("#status")).includes("Setting up your workspace"), "no 'setting up' message");
  } finally {
    await fault({ clear: true, match: p.sub });
  }
  // The worker (tenantctl drain, as the operator) finishes the hand-off; the page notices.
  // The queue is the stack's: other tests may have left hand-offs on it that cannot be finished
  // (their tables are gone), which makes drain exit 1. What counts is this person's page.
  try {
    execFileSync(`${root}target/debug/tenantctl`, ["drain"], { env: { ...operator, PATH: process.env.PATH }, stdio: ["ignore", "ignore", "pipe"] });
  } catch (e) {
    console.log(`  drain: ${String(e.stderr || e.message).trim().split("\n").pop()}`);
  }
  await p.page.waitForSelector('#status[data-state="round-trip-ok"]', { timeout: 60000 });
  await p.context.close();
});

await browser.close();
const failed = results.filter((r) => !r).length;
console.log(`e2e: ${results.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);

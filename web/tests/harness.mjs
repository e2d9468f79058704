// Test harness: a real `tern serve` (the binary named by TERN_BIN) on a free loopback port with
// its own data directory, and Debian's Chromium driven by playwright-core.
import { spawn, execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';

export const PUSH_KEY = 'web-test-push-key-0123456789';
export const PASSWORD = 'correct horse battery';
const BIN = process.env.TERN_BIN ?? new URL('../../target/debug/tern', import.meta.url).pathname;
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** A tern server that can be stopped and started again on the same port and data. */
export class Tern {
  static async start() {
    const t = new Tern();
    t.dir = mkdtempSync(join(tmpdir(), 'tern-web-'));
    t.port = await freePort();
    t.url = `http://127.0.0.1:${t.port}`;
    await t.up();
    return t;
  }

  async up() {
    this.log = '';
    this.proc = spawn(BIN, ['serve', '--data-dir', this.dir, '--http', `127.0.0.1:${this.port}`, '--tcp', '127.0.0.1:0', '--push-key', PUSH_KEY], {
      env: { ...process.env, TERN_ROOMS__ONLINE_INTERVAL_MS: '500', TERN_STORE__SYNCHRONOUS: 'normal' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.proc.stdout.on('data', (d) => { this.log += d; });
    this.proc.stderr.on('data', (d) => { this.log += d; });
    const exited = new Promise((resolve) => this.proc.once('exit', resolve));
    for (let i = 0; i < 200; i++) {
      try {
        const r = await fetch(`${this.url}/healthz`);
        if (r.ok) return;
      } catch {
        // not listening yet
      }
      if (this.proc.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    await Promise.race([exited, new Promise((r) => setTimeout(r, 10))]);
    throw new Error(`tern serve did not start:\n${this.log}`);
  }

  async down() {
    if (!this.proc || this.proc.exitCode !== null) return;
    const exited = new Promise((resolve) => this.proc.once('exit', resolve));
    this.proc.kill('SIGTERM');
    await exited;
  }

  async stop() {
    await this.down();
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Runs the `tern` CLI against this server (e.g. `tern push`). */
  async cli(...args) {
    const { stdout } = await promisify(execFile)(BIN, args, {
      env: { ...process.env, TERN_URL: this.url, TERN_PUSH_KEY: PUSH_KEY },
    });
    return stdout;
  }
}

export async function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
}

/**
 * A user in their own browser context (own storage): registered through the UI, online.
 * Page errors and dialogs are collected; a test asserts there were none.
 */
export async function newUser(browser, tern, username) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
  const user = { context, username, errors: [], dialogs: [] };
  user.page = await openPage(user, tern);
  await user.page.fill('#login-username', username);
  await user.page.fill('#login-password', PASSWORD);
  await user.page.click('#register-submit');
  await user.page.locator('#conn-state', { hasText: 'online' }).waitFor();
  return user;
}

export async function openPage(user, tern, path = '/') {
  const page = await user.context.newPage();
  page.on('pageerror', (e) => user.errors.push(String(e)));
  page.on('console', (m) => {
    // Failed requests are recorded with their URL below; connection failures while a test
    // has the server down are expected.
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) user.errors.push(m.text());
  });
  page.on('response', (r) => { if (r.status() >= 400) user.errors.push(`${r.status()} ${r.request().method()} ${r.url()}`); });
  page.on('dialog', async (d) => { user.dialogs.push(d.message()); await d.dismiss(); });
  await page.goto(tern.url + path);
  return page;
}

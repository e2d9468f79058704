// End to end: the web client served by a real `tern serve`, in Debian's Chromium.
// The tests run in order and share one server and the users they create.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { Tern, launch, newUser, openPage } from './harness.mjs';

const XSS = '<img src=x onerror=alert(1)>';
const SHOTS = process.env.TERN_SCREENSHOTS; // a directory: write the README's screenshots there

let tern;
let browser;
const users = {};

/** The texts of the chat's messages (content and notices), in display order. */
async function thread(page) {
  return page.locator('#messages li.msg .text').allTextContents();
}

async function openChatWith(user, peerName) {
  await user.page.click('#nav-chats');
  await user.page.locator('#conv-list a.conv', { hasText: peerName }).click();
  await user.page.locator('#chat-title', { hasText: peerName }).waitFor();
}

async function send(page, text) {
  await page.fill('#composer-input', text);
  await page.keyboard.press('Enter');
}

/** The last own message with this text, once the server has answered `sent`. */
function ownMessage(page, text) {
  return page.locator('#messages li.msg.mine:not(.pending)', { has: page.locator('.text', { hasText: text }) }).last();
}

/** Polls `read` until it deep-equals `expected` (10 s), then asserts once more for the message. */
async function eventually(read, expected) {
  const deadline = Date.now() + 10_000;
  let actual;
  while (Date.now() < deadline) {
    actual = await read();
    if (JSON.stringify(actual) === JSON.stringify(expected)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.deepEqual(actual, expected);
}

async function expectText(locator, text) {
  await locator.filter({ hasText: text }).first().waitFor();
}

describe('web client', () => {
  before(async () => {
    tern = await Tern.start();
    browser = await launch();
  });

  after(async () => {
    for (const u of Object.values(users)) {
      assert.deepEqual(u.dialogs, [], `${u.username}: no script ran from content`);
      assert.deepEqual(u.errors.filter((e) => !e.includes('ERR_CONNECTION_REFUSED') && !e.includes('WebSocket')), [], `${u.username}: no page errors`);
    }
    await browser?.close();
    await tern?.stop();
  });

  test('serves the client with a strict content security policy', async () => {
    const r = await fetch(`${tern.url}/`);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /^text\/html/);
    assert.match(r.headers.get('content-security-policy'), /script-src 'self'/);
    assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
    const etag = r.headers.get('etag');
    const again = await fetch(`${tern.url}/`, { headers: { 'if-none-match': etag } });
    assert.equal(again.status, 304);
    const missing = await fetch(`${tern.url}/app/nope.js`);
    assert.equal(missing.status, 404);
    assert.equal((await missing.json()).error.code, 'not_found');
  });

  test('two users become friends, chat both ways and see read receipts; content renders as text', async () => {
    users.alice = await newUser(browser, tern, 'alice');
    users.bob = await newUser(browser, tern, 'bob');
    const { alice, bob } = users;

    // Alice finds bob and asks; bob sees the request live and accepts.
    await bob.page.click('#nav-friends');
    await alice.page.click('#nav-friends');
    await alice.page.fill('#search-input', 'bo');
    await alice.page.click('#search');
    await alice.page.locator('#search-results li', { hasText: 'bob' }).locator('[data-action="add"]').click();
    await alice.page.locator('#outgoing li', { hasText: 'bob' }).waitFor();
    await bob.page.locator('#incoming li', { hasText: 'alice' }).locator('[data-action="accept"]').click();
    await bob.page.locator('#friend-list li', { hasText: 'alice' }).waitFor();
    await alice.page.locator('#friend-list li', { hasText: 'bob' }).waitFor();
    await alice.page.locator('#friend-list li', { hasText: 'bob' }).locator('.dot.online').waitFor();

    // Alice writes first: pending → sent; bob sees an unread badge, opens, alice sees "Read".
    await alice.page.locator('#friend-list li', { hasText: 'bob' }).locator('[data-action="message"]').click();
    await alice.page.locator('#chat-title', { hasText: 'bob' }).waitFor();
    await send(alice.page, 'hello bob');
    await ownMessage(alice.page, 'hello bob').locator('.state[data-state="sent"]').waitFor();
    await bob.page.click('#nav-chats');
    const badge = bob.page.locator('#conv-list a.conv', { hasText: 'alice' }).locator('.badge');
    await badge.waitFor();
    assert.equal(await badge.textContent(), '1');
    await openChatWith(bob, 'alice');
    await expectText(bob.page.locator('#messages li.msg'), 'hello bob');
    await ownMessage(alice.page, 'hello bob').locator('.state[data-state="read"]').waitFor();
    assert.equal(await bob.page.locator('#conv-list a.conv', { hasText: 'alice' }).locator('.badge').count(), 0);

    // Bob types (alice sees it) and answers; the hostile string arrives as text.
    await bob.page.fill('#composer-input', 'h');
    await bob.page.locator('#composer-input').dispatchEvent('input');
    await alice.page.locator('#typing', { hasText: 'typing' }).waitFor();
    await send(bob.page, 'hi alice');
    await send(bob.page, XSS);
    await expectText(alice.page.locator('#messages li.msg'), XSS);
    await eventually(() => thread(alice.page), ['hello bob', 'hi alice', XSS]);
    await eventually(() => thread(bob.page), ['hello bob', 'hi alice', XSS]);
    assert.equal(await alice.page.locator('#messages img').count(), 0, 'no element was made from the message');
    assert.equal(await alice.page.locator('#conv-list img').count(), 0);
    await ownMessage(bob.page, XSS).locator('.state[data-state="read"]').waitFor();

    // Recall: the text is gone on both sides, a tombstone stays.
    await send(alice.page, 'oops, wrong chat');
    await ownMessage(alice.page, 'oops, wrong chat').locator('button.recall').click();
    await expectText(bob.page.locator('#messages li.msg.recalled'), 'alice recalled a message');
    await expectText(alice.page.locator('#messages li.msg.recalled'), 'You recalled a message');
    assert.ok(!(await thread(bob.page)).includes('oops, wrong chat'));
    if (SHOTS) await alice.page.screenshot({ path: `${SHOTS}/web-chat.png` });
  });

  test('a closed browser gets what it missed when it comes back, still logged in', async () => {
    const { alice, bob } = users;
    await bob.page.close();
    await send(alice.page, 'while you were away (1)');
    await send(alice.page, 'while you were away (2)');
    await ownMessage(alice.page, 'while you were away (2)').locator('.state[data-state="sent"]').waitFor();

    bob.page = await openPage(bob, tern);
    await bob.page.locator('#conn-state', { hasText: 'online' }).waitFor();
    assert.equal(await bob.page.locator('#login-username').count(), 0, 'the stored session was used');
    const badge = bob.page.locator('#conv-list a.conv', { hasText: 'alice' }).locator('.badge');
    await badge.waitFor();
    assert.equal(await badge.textContent(), '2');
    await openChatWith(bob, 'alice');
    await expectText(bob.page.locator('#messages li.msg'), 'while you were away (2)');
    const texts = await thread(bob.page);
    assert.deepEqual(texts.slice(-2), ['while you were away (1)', 'while you were away (2)']);
    assert.equal(texts.filter((t) => t === 'hello bob').length, 1, 'no duplicates');
  });

  test('the server restarts underneath: the client reconnects and sends what was queued', async () => {
    const { alice, bob } = users;
    await tern.down();
    await alice.page.locator('#conn-state', { hasText: 'reconnecting' }).waitFor();
    await bob.page.locator('#conn-state', { hasText: 'reconnecting' }).waitFor();
    await send(alice.page, 'sent while the server was down');
    const pending = alice.page.locator('#messages li.pending', { hasText: 'sent while the server was down' });
    await pending.locator('.state[data-state="pending"]').waitFor();

    await tern.up();
    await alice.page.locator('#conn-state', { hasText: 'online' }).waitFor({ timeout: 40_000 });
    await ownMessage(alice.page, 'sent while the server was down').locator('.state').waitFor();
    await expectText(bob.page.locator('#messages li.msg'), 'sent while the server was down');
    await send(bob.page, 'welcome back');
    await expectText(alice.page.locator('#messages li.msg'), 'welcome back');
    const texts = await thread(alice.page);
    assert.equal(texts.filter((t) => t === 'sent while the server was down').length, 1, 'sent once');
    assert.equal(await alice.page.locator('#messages li.pending').count(), 0);
  });

  test('a group of three', async () => {
    users.carol = await newUser(browser, tern, 'carol');
    const { alice, bob, carol } = users;
    await alice.page.click('#nav-chats');
    await alice.page.click('#new-group');
    await alice.page.fill('#group-name', 'weekend trip');
    await alice.page.click('#create-group');
    await alice.page.locator('#chat-title', { hasText: 'weekend trip' }).waitFor();
    await alice.page.click('#show-members');
    for (const name of ['bob', 'carol']) {
      await alice.page.fill('#invite-username', name);
      await alice.page.click('#invite');
      await alice.page.locator('#member-list li', { hasText: name }).waitFor();
    }
    assert.deepEqual(await alice.page.locator('#member-list li .role').allTextContents(), ['owner', 'member', 'member']);

    // Invitees see the group appear, and everyone sees every message in one order.
    await openChatWith(bob, 'weekend trip');
    await openChatWith(carol, 'weekend trip');
    await send(alice.page, 'who drives?');
    await expectText(bob.page.locator('#messages li.msg'), 'who drives?');
    await send(bob.page, 'I can');
    await expectText(carol.page.locator('#messages li.msg'), 'I can');
    await send(carol.page, 'I bring snacks');
    for (const u of [alice, bob, carol]) {
      await expectText(u.page.locator('#messages li.msg'), 'I bring snacks');
      await eventually(() => thread(u.page), ['who drives?', 'I can', 'I bring snacks']);
    }
    await expectText(bob.page.locator('#messages li.notice'), 'alice added carol');
    // The list is ordered by the latest message, live: the group first, then alice's 1:1 on top.
    await eventually(() => bob.page.locator('#conv-list .conv-title').allTextContents(), ['weekend trip', 'alice']);
    // Wait for each chat to open before typing: the click changes the hash, and the chat follows a
    // moment later; typing at once would write into the conversation still shown.
    await openChatWith(alice, 'bob');
    await send(alice.page, 'psst, bob');
    await ownMessage(alice.page, 'psst, bob').waitFor();
    await openChatWith(alice, 'weekend trip');
    await bob.page.locator('#conv-list li:first-child .conv-title', { hasText: 'alice' }).waitFor();
    await bob.page.locator('#conv-list a.conv', { hasText: 'alice' }).locator('.badge').waitFor();
    await expectText(carol.page.locator('#messages li.notice'), 'alice added You');

    // Carol leaves: the others see it, she loses the conversation.
    await carol.page.click('#show-members');
    await carol.page.click('#leave-group');
    await expectText(alice.page.locator('#messages li.notice'), 'carol left');
    await carol.page.locator('#conv-list a.conv', { hasText: 'weekend trip' }).waitFor({ state: 'detached' });
  });

  test('a live room: pushes from `tern push` fly as danmaku in two browsers, high ones as banners', async () => {
    const { bob, carol } = users;
    for (const u of [bob, carol]) {
      await u.page.click('#nav-live');
      await u.page.fill('#room-input', 'live-1');
      await u.page.click('#join-room');
      await u.page.locator('#room-title', { hasText: 'live-1' }).waitFor();
    }
    await bob.page.locator('#room-online[data-count="2"]').waitFor();
    await bob.page.evaluate(() => { window.stillTheSamePage = true; });

    await tern.cli('push', '--room', 'live-1', '{"danmaku":"666 from tern push","color":"#ffeb3b"}');
    await tern.cli('push', '--room', 'live-1', '--priority', 'high', '--qos', '1', '{"text":"viewer42 sent a rocket"}');
    for (const u of [bob, carol]) {
      await u.page.locator('#stage .danmaku', { hasText: '666 from tern push' }).waitFor();
      await u.page.locator('#banners .banner', { hasText: 'viewer42 sent a rocket' }).waitFor();
    }
    // Viewers post too: each post reaches both, with its author's name, once.
    await bob.page.fill('#danmaku-input', 'hello from bob');
    await bob.page.click('#send-danmaku');
    for (const u of [bob, carol]) {
      await u.page.locator('#danmaku-log li', { hasText: ': hello from bob' }).waitFor();
    }
    await carol.page.waitForTimeout(300);
    assert.equal(await carol.page.locator('#danmaku-log li', { hasText: 'hello from bob' }).count(), 1, 'once');
    assert.equal(await bob.page.locator('#danmaku-log li', { hasText: 'hello from bob' }).count(), 1, 'echoed once');
    // A gift from the business renders from its fields, not as JSON.
    await tern.cli('push', '--room', 'live-1', '--priority', 'high', '{"gift":"rocket","count":2,"from":"viewer42"}');
    await carol.page.locator('#banners .banner', { hasText: 'viewer42 sent rocket ×2' }).waitFor();
    // A late joiner sees the room's recent posts, and who entered.
    const lena = await newUser(browser, tern, 'lena');
    await lena.page.click('#nav-live');
    await lena.page.fill('#room-input', 'live-1');
    await lena.page.click('#join-room');
    await lena.page.locator('#danmaku-log li', { hasText: '666 from tern push' }).waitFor();
    await lena.page.locator('#danmaku-log li', { hasText: ': hello from bob' }).waitFor();
    await bob.page.locator('#danmaku-log li.notice', { hasText: 'lena entered' }).waitFor();
    await lena.context.close();
    if (SHOTS) {
      for (const text of ['first!', 'so smooth', '2333', 'hello from the web', 'what a play']) {
        await tern.cli('push', '--room', 'live-1', JSON.stringify({ danmaku: text }));
      }
      await carol.page.waitForTimeout(1200);
      await carol.page.screenshot({ path: `${SHOTS}/web-room.png` });
    }

    // Bob switches rooms on the same page; live-1's pushes no longer reach him.
    await bob.page.fill('#room-input', 'live-2');
    await bob.page.click('#join-room');
    await bob.page.locator('#room-title', { hasText: 'live-2' }).waitFor();
    await bob.page.locator('#room-online[data-count="1"]').waitFor();
    await carol.page.locator('#room-online[data-count="1"]').waitFor();
    await tern.cli('push', '--room', 'live-1', '{"danmaku":"only carol sees this"}');
    await tern.cli('push', '--room', 'live-2', '{"danmaku":"only bob sees this"}');
    await carol.page.locator('#danmaku-log li', { hasText: 'only carol sees this' }).waitFor();
    await bob.page.locator('#danmaku-log li', { hasText: 'only bob sees this' }).waitFor();
    assert.equal(await bob.page.locator('#danmaku-log li', { hasText: 'only carol sees this' }).count(), 0);
    assert.equal(await carol.page.locator('#danmaku-log li', { hasText: 'only bob sees this' }).count(), 0);
    assert.equal(await bob.page.evaluate(() => window.stillTheSamePage), true, 'no reload');
  });

  test('scroll-back pages older messages by seq, each once, in order', async () => {
    const { alice } = users;
    users.erin = await newUser(browser, tern, 'erin');
    const { erin } = users;
    // 95 messages from alice's second device (a script in her page, its own session) while
    // erin's browser is closed: she pages them from history, not from live pushes.
    const erinId = await userId('erin');
    await erin.page.close();
    await alice.page.evaluate(async ({ to, n }) => {
      const s = await fetch('/v1/sessions', { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ username: 'alice', password: 'correct horse battery', device_id: 'script' }) }).then((r) => r.json());
      const ws = new WebSocket(s.endpoints.ws);
      await new Promise((resolve) => { ws.onopen = resolve; });
      ws.send(JSON.stringify({ op: 'auth', token: s.token }));
      let sent = 0;
      const done = new Promise((resolve) => {
        ws.onmessage = (e) => { if (JSON.parse(e.data).op === 'sent' && ++sent === n) resolve(); };
      });
      for (let i = 1; i <= n; i++) {
        ws.send(JSON.stringify({ op: 'send', id: i, to, client_msg_id: `scroll-${i}`, body: { type: 'text', text: `line ${i}` } }));
      }
      await done;
      ws.close();
    }, { to: erinId, n: 95 });
    erin.page = await openPage(erin, tern);
    await erin.page.locator('#conv-list a.conv', { hasText: 'alice' }).locator('.badge', { hasText: '95' }).waitFor();
    await openChatWith(erin, 'alice');
    await expectText(erin.page.locator('#messages li.msg'), 'line 95');
    assert.ok((await thread(erin.page)).length < 95, 'the first page is not everything');
    while (await erin.page.locator('#messages li.start', { hasText: 'Start of the conversation' }).count() === 0) {
      await erin.page.locator('#messages').evaluate((el) => { el.scrollTop = 0; });
      await erin.page.waitForTimeout(100);
    }
    assert.deepEqual(await thread(erin.page), Array.from({ length: 95 }, (_, i) => `line ${i + 1}`));
  });

  test('keyboard only: log in and send a message', async () => {
    const context = await browser.newContext();
    const user = { context, username: 'dave', errors: [], dialogs: [] };
    users.dave = user;
    user.page = await openPage(user, tern);
    const page = user.page;
    await page.keyboard.type('dave');
    await page.keyboard.press('Tab');
    await page.keyboard.type('correct horse battery');
    await page.keyboard.press('Tab');
    await page.keyboard.press('Tab'); // "Log in" → "Create account"
    await page.keyboard.press('Enter');
    await page.locator('#conn-state', { hasText: 'online' }).waitFor();
    await page.goto(`${tern.url}/#/chats/d:${await userId('dave')}:${await userId('dave')}`);
    await page.locator('#composer-input').focus();
    await page.keyboard.type('a note to myself');
    await page.keyboard.press('Enter');
    await ownMessage(page, 'a note to myself').locator('.state').waitFor();
    assert.equal(await page.locator('#chat-title').textContent(), 'Note to self');
  });

  test('declining, blocking and unblocking; a refused message can be retried', async () => {
    const { dave, erin } = users;
    await erin.page.click('#nav-friends');
    await dave.page.click('#nav-friends');
    await erin.page.fill('#search-input', 'dave');
    await erin.page.click('#search');
    await erin.page.locator('#search-results li', { hasText: 'dave' }).locator('[data-action="add"]').click();
    await dave.page.locator('#incoming li', { hasText: 'erin' }).locator('[data-action="decline"]').click();
    await dave.page.locator('#incoming').waitFor({ state: 'detached' });
    await erin.page.locator('#outgoing').waitFor({ state: 'detached' });

    await dave.page.fill('#search-input', 'erin');
    await dave.page.click('#search');
    await dave.page.locator('#search-results li', { hasText: 'erin' }).locator('[data-action="block"]').click();
    await dave.page.locator('#blocked li', { hasText: 'erin' }).waitFor();

    await erin.page.locator('#search-results li', { hasText: 'dave' }).getByRole('button', { name: 'Message' }).click();
    await erin.page.locator('#chat-title', { hasText: 'dave' }).waitFor();
    await send(erin.page, 'are you there?');
    const refused = erin.page.locator('#messages li.pending', { hasText: 'are you there?' });
    await refused.locator('.state[data-state="failed"]', { hasText: 'blocked' }).waitFor();

    await dave.page.locator('#blocked li', { hasText: 'erin' }).locator('[data-action="unblock"]').click();
    await dave.page.locator('#blocked').waitFor({ state: 'detached' });
    await refused.getByRole('button', { name: 'Retry' }).click();
    await ownMessage(erin.page, 'are you there?').locator('.state[data-state="sent"]').waitFor();
    await dave.page.click('#nav-chats');
    await dave.page.locator('#conv-list a.conv', { hasText: 'erin' }).locator('.badge', { hasText: '1' }).waitFor();

    // Logging out voids the token on the server, not just in this browser.
    const token = await dave.page.evaluate(() => JSON.parse(localStorage.getItem('tern.session')).token);
    await dave.page.click('#logout');
    await dave.page.locator('#login-username').waitFor();
    await eventually(async () => (await fetch(`${tern.url}/v1/me`, { headers: { authorization: `Bearer ${token}` } })).status, 401);
  });

  test('with WebSocket blocked the client falls back to SSE, and with SSE blocked too to long-poll', async () => {
    /** A user whose network blocks the given carriers: `/v1/ws` is accepted and closed at once
     * (what a proxy that kills upgrades does), `/v1/sse` requests fail. */
    async function blockedUser(username, blockSse) {
      const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
      await context.routeWebSocket(/\/v1\/ws$/, (ws) => ws.close({ code: 1011, reason: 'blocked by a proxy' }));
      if (blockSse) await context.route(/\/v1\/sse/, (route) => route.abort('blockedbyclient'));
      const user = { context, username, errors: [], dialogs: [] };
      user.page = await openPage(user, tern);
      await user.page.fill('#login-username', username);
      await user.page.fill('#login-password', 'correct horse battery');
      await user.page.click('#register-submit');
      return user;
    }
    users.frank = await blockedUser('frank', false);
    users.gina = await blockedUser('gina', true);
    const { frank, gina } = users;
    await frank.page.locator('#conn-state[data-transport="sse"]', { hasText: 'online (via SSE)' }).waitFor();
    await gina.page.locator('#conn-state[data-transport="longpoll"]', { hasText: 'online (via long-poll)' }).waitFor();

    // Chat both ways, SSE to long-poll.
    await frank.page.click('#nav-friends');
    await frank.page.fill('#search-input', 'gina');
    await frank.page.click('#search');
    await frank.page.locator('#search-results li', { hasText: 'gina' }).getByRole('button', { name: 'Message' }).click();
    await frank.page.locator('#chat-title', { hasText: 'gina' }).waitFor();
    await send(frank.page, 'can you hear me over SSE?');
    await ownMessage(frank.page, 'can you hear me over SSE?').locator('.state[data-state="sent"]').waitFor();
    await openChatWith(gina, 'frank');
    await expectText(gina.page.locator('#messages li.msg'), 'can you hear me over SSE?');
    await send(gina.page, 'loud and clear, by long-poll');
    await expectText(frank.page.locator('#messages li.msg'), 'loud and clear, by long-poll');
    await eventually(() => thread(frank.page), ['can you hear me over SSE?', 'loud and clear, by long-poll']);
    await ownMessage(frank.page, 'can you hear me over SSE?').locator('.state[data-state="read"]').waitFor();

    // A live room's pushes reach both.
    for (const u of [frank, gina]) {
      await u.page.click('#nav-live');
      await u.page.fill('#room-input', 'fallback-room');
      await u.page.click('#join-room');
      await u.page.locator('#room-title', { hasText: 'fallback-room' }).waitFor();
    }
    await tern.cli('push', '--room', 'fallback-room', '{"danmaku":"pushed through plain HTTP"}');
    for (const u of [frank, gina]) {
      await u.page.locator('#danmaku-log li', { hasText: 'pushed through plain HTTP' }).waitFor();
    }
  });
  test('files: alice sends an image and a file; bob sees the thumbnail, opens the image and downloads the file', async () => {
    users.helen = await newUser(browser, tern, 'helen');
    users.ivan = await newUser(browser, tern, 'ivan');
    const { helen, ivan } = users;
    await helen.page.click('#nav-friends');
    await helen.page.fill('#search-input', 'ivan');
    await helen.page.click('#search');
    await helen.page.locator('#search-results li', { hasText: 'ivan' }).getByRole('button', { name: 'Message' }).click();
    await helen.page.locator('#chat-title', { hasText: 'ivan' }).waitFor();

    const photo = readFileSync(new URL('../../crates/tern/tests/fixtures/photo-exif.jpg', import.meta.url));
    const notes = Buffer.from('packing list:\n- tent\n- <script>alert(1)</script>\n'.repeat(2000));
    await helen.page.setInputFiles('#attach-input', [
      { name: 'holiday.jpg', mimeType: 'image/jpeg', buffer: photo },
      { name: 'notes.html', mimeType: 'text/html', buffer: notes },
    ]);
    // Both go up (with progress), then appear as sent messages.
    await helen.page.locator('#messages li.msg.mine:not(.pending) img.thumb').waitFor();
    await helen.page.locator('#messages li.msg.mine:not(.pending) .file-card', { hasText: 'notes.html' }).waitFor();
    assert.equal(await helen.page.locator('#uploads li').count(), 0, 'no upload left in progress');

    await openChatWith(ivan, 'helen');
    const thumb = ivan.page.locator('#messages li.msg img.thumb');
    await thumb.waitFor();
    await ivan.page.waitForFunction(() => document.querySelector('#messages img.thumb')?.naturalWidth > 0);
    // The thumbnail is upright (EXIF orientation 6 turns the 64x32 photo to 32x64).
    const natural = await thumb.evaluate((img) => [img.naturalWidth, img.naturalHeight]);
    assert.deepEqual(natural, [32, 64]);
    await thumb.click();
    await ivan.page.waitForFunction(() => document.querySelector('#viewer img.full')?.naturalWidth > 0);
    await ivan.page.locator('#viewer').click();
    await ivan.page.locator('#viewer').waitFor({ state: 'detached' });

    const card = ivan.page.locator('#messages li.msg .file-card', { hasText: 'notes.html' });
    await expectText(card, `${Math.round(notes.length / 1024)} KB`);
    const [download] = await Promise.all([ivan.page.waitForEvent('download'), card.locator('button.download').click()]);
    assert.equal(download.suggestedFilename(), 'notes.html');
    assert.deepEqual(readFileSync(await download.path()), notes, 'the downloaded bytes are the uploaded ones');
    assert.equal(await ivan.page.locator('#messages script').count(), 0);

    // Stickers: a built-in emoticon, then helen keeps her photo as a sticker and sends it.
    await helen.page.click('#stickers');
    await helen.page.click('#sticker-picker [data-code="thumbs_up"]');
    await ivan.page.locator('#messages li.msg .emoticon[data-code="thumbs_up"]', { hasText: '👍' }).waitFor();
    const keep = helen.page.locator('#messages li.msg', { has: helen.page.locator('img.thumb') }).locator('button.add-sticker');
    await keep.click();
    await helen.page.locator('#messages button.add-sticker', { hasText: 'Added to stickers' }).waitFor();
    await helen.page.click('#stickers');
    await helen.page.locator('#sticker-picker .custom-sticker').first().click();
    await ivan.page.waitForFunction(() => document.querySelector('#messages img.sticker-image')?.naturalWidth > 0);

    // Helen sets an avatar (an uploaded image) and a nickname in her profile.
    await helen.page.click('#me');
    await helen.page.setInputFiles('#avatar-input', { name: 'me.png', mimeType: 'image/png',
      buffer: readFileSync(new URL('../../crates/tern/tests/fixtures/sticker.png', import.meta.url)) });
    await helen.page.waitForFunction(() => document.querySelector('#avatar-preview')?.naturalWidth > 0);
    await helen.page.fill('#profile-nickname', 'Helen H.');
    await helen.page.click('#profile-save');
    await helen.page.locator('#profile').waitFor({ state: 'detached' });
    await helen.page.locator('#me', { hasText: 'Helen H.' }).waitFor();
    await helen.page.waitForFunction(() => document.querySelector('#me img.avatar')?.naturalWidth > 0);
  });
});

async function userId(name) {
  const s = await fetch(`${tern.url}/v1/sessions`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: name, password: 'correct horse battery', device_id: 'probe' }),
  }).then((r) => r.json());
  return s.user_id;
}

// The chat model of one logged-in user: conversations, message windows, the outbox of unsent
// messages, friends, profiles, typing and presence. Views subscribe to its events and render
// from it; it talks to the server through the Connection (socket) and Api (REST).
//
// Delivery duties of a client (docs/PROTOCOL.md, section 7) live here: every pushed message is
// ACKed, deduplicated by (conv, seq), and a jump in seq is filled from history before the
// conversation's watermark (`held`, the highest seq held without a hole) moves past it. On
// reconnect the watermarks are the `resume` map, so the server pushes exactly what was missed.
//
// Events: convs, messages {conv}, incoming {msg, text}, friends, typing {conv}, group {conv},
// notice {notice}, push {push, scope}
import { RequestError } from './connection.js';
import { bodyText } from './text.js';

const PAGE = 40;
const OUTBOX_KEY = (user) => `tern.outbox.${user}`;

export const isContent = (body) => body.type !== 'notice' && body.type !== 'recalled' && body.type !== 'unreadable';

export class Chat extends EventTarget {
  constructor({ me, api, conn }) {
    super();
    this.me = me; // {user_id, username}
    this.api = api;
    this.conn = conn;
    this.convs = new Map(); // conv_id → summary (as GET /v1/conversations, kept live)
    this.windows = new Map(); // conv_id → {messages: Map seq → msg, oldest, complete}
    this.held = new Map(); // conv_id → highest seq held with nothing missing below it
    this.filling = new Set(); // conv_ids whose gap is being fetched
    this.outbox = this.loadOutbox();
    this.profiles = new Map(); // user_id → profile | Promise
    this.friends = { friends: [], incoming: [], outgoing: [], blocked: [] };
    this.typing = new Map(); // conv_id → until (ms)
    this.open = null; // the conversation on screen
    this.timers = new Map();
    this.msgCounter = 0;
    this.seenPushes = new Set(); // msg_ids of recent pushes, oldest first
    conn.addEventListener('frame', (e) => this.onFrame(e.detail.frame));
    conn.addEventListener('ready', () => this.flushOutbox());
  }

  emit(type, detail = {}) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /** Debounces a refresh of one kind. */
  /** Cancels the delayed refreshes: after a logout they would only meet a voided token. */
  stop() {
    for (const timer of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
  }

  later(key, ms, fn) {
    if (this.timers.has(key)) return;
    this.timers.set(key, setTimeout(() => {
      this.timers.delete(key);
      fn().catch(() => {});
    }, ms));
  }

  /** Loads what the connection resumes from; call before starting the connection. */
  async load() {
    const stream = `u:${this.me.user_id}`;
    const [list, events] = await Promise.all([
      this.api.get('/v1/conversations'),
      this.api.get(`/v1/conversations/${stream}/messages?limit=1`),
    ]);
    this.setConvs(list);
    this.held.set(stream, events.last_seq);
    await this.refreshFriends();
  }

  resumeMap() {
    return Object.fromEntries(this.held);
  }

  setConvs(list) {
    this.convs = new Map(list.map((c) => [c.conv_id, c]));
    for (const c of list) {
      if (!this.held.has(c.conv_id)) this.held.set(c.conv_id, c.last_seq);
    }
    for (const c of list) this.profileOf(peerOf(c.conv_id, this.me.user_id));
    this.emit('convs');
  }

  async refreshConvs() {
    const list = await this.api.get('/v1/conversations');
    // Keep live fields that may be ahead of the list fetched a moment ago.
    for (const c of list) {
      const mine = this.convs.get(c.conv_id);
      if (!mine) continue;
      if (mine.last_seq > c.last_seq) Object.assign(c, { last_seq: mine.last_seq, last_ts: mine.last_ts, last_message: mine.last_message });
      if (mine.read_seq > c.read_seq) {
        c.read_seq = mine.read_seq; // our read report may not have landed yet
        if (c.read_seq >= c.last_seq) c.unread = 0;
      }
      if ((mine.peer_read_seq ?? 0) > (c.peer_read_seq ?? 0)) c.peer_read_seq = mine.peer_read_seq;
    }
    this.setConvs(list);
    if (this.open) this.markRead(this.open);
  }

  async refreshFriends() {
    this.friends = await this.api.get('/v1/friends');
    for (const f of this.friends.friends) this.profiles.set(f.user_id, f);
    for (const r of [...this.friends.incoming, ...this.friends.outgoing]) this.profileOf(r.user_id);
    this.emit('friends');
  }

  /** A profile from the cache; fetches it (and emits `convs`/`friends`) when unknown. */
  profileOf(userId) {
    if (userId === null || userId === undefined) return null;
    const known = this.profiles.get(userId);
    if (known && !(known instanceof Promise)) return known;
    if (!known) {
      const fetching = this.api.get(`/v1/users/${userId}`).then((p) => {
        this.profiles.set(userId, p);
        this.emit('convs');
        this.emit('friends');
        if (this.open) this.emit('messages', { conv: this.open });
      }, () => this.profiles.delete(userId));
      this.profiles.set(userId, fetching);
    }
    return null;
  }

  nameOf(userId) {
    if (userId === this.me.user_id) return 'You';
    const p = this.profileOf(userId);
    return p ? (p.nickname || p.username) : `user ${userId}`;
  }

  titleOf(convId) {
    const c = this.convs.get(convId);
    if (convId.startsWith('g:')) return c?.name ?? 'Group';
    const peer = peerOf(convId, this.me.user_id);
    return peer === this.me.user_id ? 'Note to self' : this.nameOf(peer);
  }

  // --- incoming frames ---

  onFrame(frame) {
    switch (frame.op) {
      case 'msg':
        this.conn.ack(frame.msg_id);
        this.receive(frame);
        break;
      case 'push':
      case 'batch':
      case 'room_history': // a room's recent pushes, after `joined`
        for (const push of frame.op === 'push' ? [frame] : frame.pushes) {
          if (push.qos === 1) this.conn.ack(push.msg_id);
          if (this.seenPushes.has(push.msg_id)) continue; // a QoS-1 resend crossing our ACK
          this.seenPushes.add(push.msg_id);
          if (this.seenPushes.size > 4096) this.seenPushes.delete(this.seenPushes.values().next().value);
          this.emit('push', { push, scope: frame.scope ?? push.scope });
        }
        break;
      case 'gap':
        this.fill(frame.conv_id);
        break;
      case 'typing':
        this.typing.set(frame.conv_id, Date.now() + 4000);
        this.emit('typing', { conv: frame.conv_id });
        setTimeout(() => this.emit('typing', { conv: frame.conv_id }), 4100);
        break;
      case 'presence': {
        const friend = this.friends.friends.find((f) => f.user_id === frame.user);
        if (friend) friend.online = frame.online;
        this.emit('friends');
        break;
      }
      default:
        break;
    }
  }

  /** One message (pushed or fetched to fill a gap): stored once, notices acted on once. */
  receive(msg, { live = true } = {}) {
    const conv = msg.conv_id;
    const held = this.held.get(conv) ?? 0;
    const window = this.windowOf(conv);
    if (window.messages.has(msg.seq)) return; // a retry or a resume overlap
    if (msg.seq <= held) {
      // Seen before this window was loaded: only fill the view if it covers that seq.
      if (window.oldest !== null && msg.seq >= window.oldest) {
        window.messages.set(msg.seq, msg);
        this.emit('messages', { conv });
      }
      return;
    }
    window.messages.set(msg.seq, msg);
    if (msg.seq > held + 1) this.fill(conv);
    this.advance(conv);
    if (conv.startsWith('u:')) {
      if (msg.body.type === 'notice') this.onStreamNotice(msg.body.notice);
      return;
    }
    this.summarize(conv, msg, live);
    if (msg.body.type === 'notice') this.onConvNotice(conv, msg.body.notice);
    this.emit('messages', { conv });
  }

  /** Moves the watermark over every consecutive seq held. */
  advance(conv) {
    const window = this.windowOf(conv);
    let held = this.held.get(conv) ?? 0;
    while (window.messages.has(held + 1)) held += 1;
    this.held.set(conv, held);
  }

  summarize(conv, msg, live) {
    let c = this.convs.get(conv);
    if (!c) {
      c = { conv_id: conv, last_seq: 0, last_ts: 0, last_message: null, read_seq: 0, unread: 0 };
      this.convs.set(conv, c);
      this.profileOf(peerOf(conv, this.me.user_id));
      this.later('convs', 300, () => this.refreshConvs()); // names, read positions
    }
    if (msg.seq > c.last_seq) {
      c.last_seq = msg.seq;
      c.last_ts = msg.ts;
      c.last_message = msg;
      if (live && msg.from !== this.me.user_id && isContent(msg.body) && msg.seq > c.read_seq) {
        c.unread = Math.min(999, c.unread + 1);
        this.emit('incoming', { msg, text: bodyText(msg.body, (u) => this.nameOf(u)) });
      }
    }
    this.emit('convs');
    if (conv === this.open) this.markRead(conv);
  }

  onStreamNotice(notice) {
    switch (notice.kind) {
      case 'friend_request': case 'friend_declined': case 'friend_added': case 'friend_removed':
      case 'blocked': case 'unblocked':
        this.later('friends', 100, () => this.refreshFriends());
        break;
      case 'group_joined': case 'group_left':
        this.later('convs', 100, () => this.refreshConvs());
        break;
      case 'read': {
        // Another device of mine read up to here.
        const c = this.convs.get(notice.conv_id);
        if (c && notice.seq > c.read_seq) {
          c.read_seq = notice.seq;
          this.later('convs', 100, () => this.refreshConvs());
        }
        break;
      }
      case 'peer_read': {
        const c = this.convs.get(notice.conv_id);
        if (c) {
          c.peer_read_seq = Math.max(c.peer_read_seq ?? 0, notice.seq);
          this.emit('messages', { conv: notice.conv_id });
        }
        break;
      }
      case 'join_requested':
        this.emit('group', { conv: `g:${notice.group}` });
        break;
      default:
        break;
    }
    this.emit('notice', { notice });
  }

  onConvNotice(conv, notice) {
    if (notice.kind === 'recall') {
      const target = this.windowOf(conv).messages.get(notice.seq);
      if (target) target.body = { type: 'recalled', by: notice.by, at: 0 };
      const c = this.convs.get(conv);
      if (c?.last_message?.seq === notice.seq) c.last_message = { ...c.last_message, body: { type: 'recalled', by: notice.by } };
    } else if (notice.kind !== 'group_created') {
      this.emit('group', { conv });
      if (notice.kind === 'member_joined' || notice.kind === 'member_left' || notice.kind === 'member_kicked') {
        this.profileOf(notice.user);
      }
    }
  }

  /** Fetches everything after the watermark (a jump in seq, or a `gap` announced on resume). */
  async fill(conv) {
    if (this.filling.has(conv)) return;
    this.filling.add(conv);
    try {
      for (;;) {
        const after = this.held.get(conv) ?? 0;
        const page = await this.conn.request({ op: 'history', conv_id: conv, after_seq: after, limit: 200 });
        if (page.from_seq && page.from_seq - 1 > after) this.held.set(conv, page.from_seq - 1);
        for (const m of page.messages) this.receive(m);
        this.advance(conv);
        if ((this.held.get(conv) ?? 0) >= page.last_seq || page.messages.length === 0) break;
      }
    } catch {
      // Retried by the next push or reconnect.
    } finally {
      this.filling.delete(conv);
    }
  }

  windowOf(conv) {
    let w = this.windows.get(conv);
    if (!w) {
      w = { messages: new Map(), oldest: null, complete: false };
      this.windows.set(conv, w);
    }
    return w;
  }

  /** Loads the newest page (first open) or the page before the oldest loaded (scroll-back). */
  async loadOlder(conv) {
    const w = this.windowOf(conv);
    if (w.complete) return;
    if (conv.startsWith('d:') && !this.convs.has(conv)) {
      // A 1:1 chat with no message yet: nothing to page (the server would answer not_found).
      w.complete = true;
      this.emit('messages', { conv });
      return;
    }
    const query = w.oldest === null ? `limit=${PAGE}` : `before_seq=${w.oldest}&limit=${PAGE}`;
    const page = await this.api.get(`/v1/conversations/${conv}/messages?${query}`);
    for (const m of page.messages) {
      if (!w.messages.has(m.seq)) w.messages.set(m.seq, m);
    }
    const seqs = page.messages.map((m) => m.seq);
    if (seqs.length) w.oldest = Math.min(w.oldest ?? Infinity, ...seqs);
    // Done when a page comes back short or reaches the first seq this user may read.
    w.complete = seqs.length < PAGE || w.oldest <= (page.from_seq ?? 1);
    if (page.last_seq > (this.held.get(conv) ?? 0)) this.fill(conv);
    this.emit('messages', { conv });
  }

  // --- reading ---

  setOpen(conv) {
    this.open = conv;
    if (conv) this.markRead(conv);
  }

  /** Reports the read position once the conversation is on screen (debounced). */
  markRead(conv) {
    const c = this.convs.get(conv);
    if (!c || document.visibilityState !== 'visible') return;
    if (c.unread) {
      c.unread = 0;
      this.emit('convs');
    }
    if (c.last_seq <= c.read_seq) return;
    this.later(`read:${conv}`, 400, async () => {
      const now = this.convs.get(conv); // the list may have been refreshed meanwhile
      if (!now || now.last_seq <= now.read_seq) return;
      const seq = now.last_seq;
      now.read_seq = seq;
      await this.conn.request({ op: 'read', conv_id: conv, seq });
    });
  }

  // --- sending ---

  newClientMsgId() {
    // Growing and unique: hex milliseconds, a counter, random bits (PROTOCOL.md, `send`).
    this.msgCounter = (this.msgCounter + 1) % 0x10000;
    const random = crypto.getRandomValues(new Uint32Array(1))[0].toString(16).padStart(8, '0');
    return `${Date.now().toString(16)}-${this.msgCounter.toString(16).padStart(4, '0')}-${random}`;
  }

  /** Queues a message; it is sent now or after the next reconnect, never twice. */
  send(conv, body) {
    const item = { client_msg_id: this.newClientMsgId(), conv_id: conv, body, state: 'pending', ts: Date.now() };
    this.outbox.push(item);
    this.saveOutbox();
    this.emit('messages', { conv });
    this.transmit(item);
  }

  retry(clientMsgId) {
    const item = this.outbox.find((i) => i.client_msg_id === clientMsgId);
    if (!item) return;
    item.state = 'pending';
    delete item.error;
    this.emit('messages', { conv: item.conv_id });
    this.transmit(item);
  }

  discard(clientMsgId) {
    const item = this.outbox.find((i) => i.client_msg_id === clientMsgId);
    this.outbox = this.outbox.filter((i) => i !== item);
    this.saveOutbox();
    if (item) this.emit('messages', { conv: item.conv_id });
  }

  async transmit(item) {
    if (item.inflight) return;
    item.inflight = true;
    try {
      const sent = await this.conn.request({ op: 'send', conv_id: item.conv_id, client_msg_id: item.client_msg_id, body: item.body });
      this.outbox = this.outbox.filter((i) => i !== item);
      this.saveOutbox();
      const msg = { msg_id: sent.msg_id, conv_id: sent.conv_id, seq: sent.seq, from: this.me.user_id, client_msg_id: item.client_msg_id, ts: sent.ts, body: item.body };
      const w = this.windowOf(sent.conv_id);
      w.messages.set(sent.seq, msg);
      this.advance(sent.conv_id);
      this.summarize(sent.conv_id, msg, false);
      this.emit('messages', { conv: sent.conv_id });
    } catch (e) {
      if (e instanceof RequestError && e.code === 'stopped') return;
      item.state = 'failed';
      item.error = `${e.code}: ${e.message}`;
      this.saveOutbox();
      this.emit('messages', { conv: item.conv_id });
    } finally {
      item.inflight = false;
    }
  }

  /** After a reload, messages left in the outbox go out again (same client_msg_id). */
  flushOutbox() {
    for (const item of this.outbox) if (item.state === 'pending') this.transmit(item);
  }

  loadOutbox() {
    try {
      return JSON.parse(localStorage.getItem(OUTBOX_KEY(this.me.user_id)) ?? '[]');
    } catch {
      return [];
    }
  }

  saveOutbox() {
    const keep = this.outbox.map(({ inflight, ...rest }) => rest);
    localStorage.setItem(OUTBOX_KEY(this.me.user_id), JSON.stringify(keep));
  }

  pendingIn(conv) {
    return this.outbox.filter((i) => i.conv_id === conv);
  }

  recall(conv, seq) {
    return this.conn.request({ op: 'recall', conv_id: conv, seq });
  }

  sendTyping(conv) {
    const key = `typing:${conv}`;
    if (!conv.startsWith('d:') || this.timers.has(key)) return;
    this.conn.fire({ op: 'typing', conv_id: conv });
    this.timers.set(key, setTimeout(() => this.timers.delete(key), 3000));
  }

  isTyping(conv) {
    return (this.typing.get(conv) ?? 0) > Date.now();
  }
}

/** The other participant of a 1:1 conversation id `d:a:b` (yourself for a note-to-self). */
export function peerOf(convId, me) {
  if (!convId.startsWith('d:')) return null;
  const [, a, b] = convId.split(':').map(Number);
  return a === me ? b : a;
}

/** The conversation id of a 1:1 chat with `peer`. */
export function directConv(me, peer) {
  return `d:${Math.min(me, peer)}:${Math.max(me, peer)}`;
}

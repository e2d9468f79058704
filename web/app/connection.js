// The long connection (docs/PROTOCOL.md, sections 2–7): auth with resume, requests answered by
// id, batched ACKs, heartbeat, and reconnect with jittered exponential backoff. It is carried by
// WebSocket or, where a network blocks that, by an HTTP session (SSE, then long-poll; see
// channels.js): a carrier that never opens is followed at once by the next, and the one that
// worked is tried first on the next reconnect.
//
// Requests stay queued until answered: after a reconnect every unanswered one is sent again.
// That is safe because each is idempotent on the server (`send` by client_msg_id, `history`,
// `read` and `recall` by their meaning, `join` of the current room). `publish` is not (a room
// post has no key), so it is sent only while online and fails instead of being resent.
//
// Events (CustomEvent, `detail`):
//   state  {state: 'connecting'|'online'|'waiting'|'stopped', transport?, retryAt?, reason?, message?}
//   ready  {authOk}         — authenticated; catch-up follows
//   frame  {frame}          — every server frame that is not an answer to a request
import { TRANSPORTS, openChannel } from './channels.js';
import { parse, stringify } from './wire.js';

const NO_RECONNECT = new Set(['auth_failed', 'unsupported_version', 'replaced']);
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 30_000;
const ACK_DELAY_MS = 20;

export class RequestError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

export class Connection extends EventTarget {
  /** `resume()` returns the map conv_id → last held seq at the moment of each (re)connect. */
  constructor({ token, resume }) {
    super();
    this.token = token;
    // Where the next attempt starts in TRANSPORTS (the one that worked last), and how many
    // carriers this attempt has tried.
    this.preferred = 0;
    this.tried = 0;
    this.transport = null;
    this.resume = resume;
    this.state = 'stopped';
    this.socket = null;
    this.nextId = 1;
    this.pending = new Map(); // id → {frame, resolve, reject}
    this.acks = [];
    this.ackTimer = null;
    this.attempt = 0;
    this.retryTimer = null;
    this.heartbeat = null;
    this.lastHeard = 0;
    this.onOnline = () => { if (this.state === 'waiting') this.connect(); };
  }

  start() {
    window.addEventListener('online', this.onOnline);
    this.connect();
  }

  stop() {
    window.removeEventListener('online', this.onOnline);
    this.setState('stopped', { reason: 'logout' });
    clearTimeout(this.retryTimer);
    this.teardown();
    for (const { reject } of this.pending.values()) reject(new RequestError('stopped', 'logged out'));
    this.pending.clear();
  }

  /** Sends a request; resolves with the answer frame, rejects with RequestError. */
  request(frame) {
    const id = this.nextId++;
    const full = { ...frame, id };
    const once = frame.op === 'publish';
    return new Promise((resolve, reject) => {
      if (once && this.state !== 'online') {
        reject(new RequestError('unavailable', 'not connected; try again when the status says online'));
        return;
      }
      this.pending.set(id, { frame: full, resolve, reject, once });
      if (this.state === 'online') this.write(full);
    });
  }

  /** A frame with no answer (typing): dropped when not connected. */
  fire(frame) {
    if (this.state === 'online') this.write(frame);
  }

  ack(msgId) {
    this.acks.push(msgId);
    this.ackTimer ??= setTimeout(() => this.flushAcks(), ACK_DELAY_MS);
  }

  flushAcks() {
    this.ackTimer = null;
    if (this.state !== 'online' || this.acks.length === 0) return;
    this.write({ op: 'ack', msg_ids: this.acks.splice(0, 1024) });
    if (this.acks.length) this.ackTimer = setTimeout(() => this.flushAcks(), 0);
  }

  // --- internals ---

  setState(state, extra = {}) {
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: { state, ...extra } }));
  }

  connect(fresh = true) {
    clearTimeout(this.retryTimer);
    this.teardown();
    if (fresh) this.tried = 0;
    const index = (this.preferred + this.tried) % TRANSPORTS.length;
    this.tried += 1;
    this.setState('connecting', { transport: TRANSPORTS[index] });
    let socket;
    try {
      socket = openChannel(TRANSPORTS[index], this.token);
    } catch {
      this.scheduleReconnect(null);
      return;
    }
    this.socket = socket;
    let closeFrame = null;
    let authenticated = false;
    socket.onopen = () => {
      socket.send(stringify({ op: 'auth', token: this.token, proto: 1, resume: this.resume() }));
    };
    socket.onmessage = (text) => {
      this.lastHeard = Date.now();
      let frame;
      try {
        frame = parse(text);
      } catch {
        return;
      }
      if (frame.op === 'auth_ok') {
        authenticated = true;
        this.preferred = index;
        this.transport = socket.transport;
      }
      if (frame.op === 'close') closeFrame = frame;
      else this.onFrame(frame);
    };
    socket.onclose = () => {
      if (this.socket !== socket) return;
      this.teardown();
      if (this.state === 'stopped') return;
      if (closeFrame && NO_RECONNECT.has(closeFrame.reason)) {
        this.setState('stopped', { reason: closeFrame.reason, message: closeFrame.message });
      } else if (!authenticated && !closeFrame && this.tried < TRANSPORTS.length) {
        // Blocked (never opened, or dropped before authenticating): the next carrier, now.
        this.connect(false);
      } else {
        this.scheduleReconnect(closeFrame);
      }
    };
  }

  onFrame(frame) {
    if (frame.op === 'auth_ok') {
      this.attempt = 0;
      this.setState('online', { transport: this.transport });
      this.startHeartbeat(frame.heartbeat_ms);
      this.dispatchEvent(new CustomEvent('ready', { detail: { authOk: frame } }));
      for (const [id, { frame: request, reject, once }] of this.pending) {
        if (once) {
          this.pending.delete(id);
          reject(new RequestError('unavailable', 'the connection dropped; the post may not have been sent'));
        } else {
          this.write(request);
        }
      }
      this.flushAcks();
      return;
    }
    if (frame.op === 'pong') return;
    const waiting = frame.id !== undefined ? this.pending.get(frame.id) : undefined;
    if (waiting && ['sent', 'history', 'ok', 'error', 'joined', 'left'].includes(frame.op)) {
      this.pending.delete(frame.id);
      if (frame.op === 'error') waiting.reject(new RequestError(frame.code, frame.message));
      else waiting.resolve(frame);
      return;
    }
    this.dispatchEvent(new CustomEvent('frame', { detail: { frame } }));
  }

  startHeartbeat(heartbeatMs) {
    const every = Math.max(1000, Math.floor(heartbeatMs / 2));
    this.lastHeard = Date.now();
    this.heartbeat = setInterval(() => {
      // The server answers every ping; silence for a whole heartbeat period plus slack means
      // the path is dead even if the browser has not noticed (a sleeping laptop, a lost route).
      if (Date.now() - this.lastHeard > heartbeatMs + 5000) {
        this.socket?.close();
        this.scheduleReconnect(null);
        return;
      }
      this.write({ op: 'ping' });
    }, every);
  }

  scheduleReconnect(closeFrame) {
    this.teardown();
    const backoff = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt);
    this.attempt += 1;
    // Full jitter between half and all of the backoff, so a restarted server is not hit by
    // every client in the same millisecond; the server's own hint wins when it sends one.
    const delay = closeFrame?.retry_after_ms ?? Math.round(backoff / 2 + Math.random() * backoff / 2);
    this.setState('waiting', { retryAt: Date.now() + delay, reason: closeFrame?.reason, message: closeFrame?.message });
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  teardown() {
    clearInterval(this.heartbeat);
    this.heartbeat = null;
    const socket = this.socket;
    this.socket = null;
    socket?.close();
  }

  write(frame) {
    this.socket?.send(stringify(frame));
  }
}

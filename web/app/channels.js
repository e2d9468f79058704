// The carriers of the long connection, one interface for all (docs/PROTOCOL.md, "HTTP
// transports"): `onopen()` when frames can be sent, `onmessage(text)` per server frame,
// `onclose()` once at the end, `send(text)`, `close()`, and `opened` (whether it ever opened —
// a carrier that never did is blocked on this network, and the next one is tried).
//
// WebSocket first; where it is blocked, an HTTP session: Server-Sent Events read with fetch
// (EventSource cannot send the Authorization header the session needs) or long polls, with
// frames POSTed one batch at a time, in order. Every downstream request acknowledges the last
// event id received, so a dropped request loses nothing and repeats nothing.

export const TRANSPORTS = ['ws', 'sse', 'longpoll'];

export function openChannel(transport, token) {
  if (transport === 'ws') return new WsChannel();
  return new HttpChannel(transport, token);
}

class WsChannel {
  constructor() {
    this.transport = 'ws';
    this.opened = false;
    const url = new URL('/v1/ws', location.href);
    url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    this.socket = new WebSocket(url.href);
    this.socket.onopen = () => {
      this.opened = true;
      this.onopen?.();
    };
    this.socket.onmessage = (event) => {
      if (typeof event.data === 'string') this.onmessage?.(event.data); // compression is never asked for
    };
    this.socket.onclose = () => this.onclose?.();
  }

  send(text) {
    if (this.socket.readyState === WebSocket.OPEN) this.socket.send(text);
  }

  close() {
    this.onopen = this.onmessage = this.onclose = null;
    if (this.socket.readyState <= WebSocket.OPEN) this.socket.close();
  }
}

class HttpChannel {
  constructor(transport, token) {
    this.transport = transport;
    this.token = token;
    this.opened = false;
    this.base = new URL(`/v1/${transport}`, location.href).href;
    this.session = null;
    this.lastEventId = 0;
    this.closed = false;
    this.aborter = new AbortController();
    this.outbox = Promise.resolve();
    // Sending is possible at once: the first frame (auth) opens the session.
    queueMicrotask(() => this.onopen?.());
  }

  headers(extra = {}) {
    return { authorization: `Bearer ${this.token}`, ...extra };
  }

  send(text) {
    if (this.closed) return;
    // One POST at a time, in order.
    this.outbox = this.outbox.then(() => (this.session ? this.post(text) : this.open(text))).catch(() => this.end());
  }

  async open(auth) {
    const r = await fetch(this.base, {
      method: 'POST', body: auth, headers: { 'content-type': 'application/json' }, signal: this.aborter.signal,
    });
    if (r.status === 401) {
      // The token is no good: say so as the socket transports do, with a `close` frame.
      const message = (await r.json().catch(() => null))?.error?.message ?? 'token refused';
      this.onmessage?.(JSON.stringify({ op: 'close', reason: 'auth_failed', message }));
      throw new Error(message);
    }
    if (!r.ok) throw new Error(`session refused: ${r.status}`);
    this.session = `${this.base}/${(await r.json()).session}`;
    this.opened = true;
    this.downstream();
  }

  async post(text) {
    for (let attempt = 0; attempt < 20; attempt++) {
      const r = await fetch(`${this.session}?ack=${this.lastEventId}`, {
        method: 'POST', body: `${text}\n`, headers: this.headers({ 'content-type': 'application/x-ndjson' }),
        signal: this.aborter.signal,
      });
      if (r.ok) return;
      if (r.status !== 429) throw new Error(`frames refused: ${r.status}`);
      await new Promise((done) => setTimeout(done, 200));
    }
    throw new Error('the server kept refusing frames');
  }

  /** The downstream loop: until the session ends, or the network fails twice in a row. */
  async downstream() {
    let failures = 0;
    while (!this.closed) {
      try {
        const more = this.transport === 'sse' ? await this.stream() : await this.poll();
        if (!more) break;
        failures = 0;
      } catch {
        if (this.closed || ++failures > 2) break;
        await new Promise((done) => setTimeout(done, 250 * failures));
      }
    }
    this.end();
  }

  async poll() {
    const r = await fetch(`${this.session}?ack=${this.lastEventId}`, { headers: this.headers(), signal: this.aborter.signal });
    if (r.status === 404 || r.status === 410 || r.status === 401) return false;
    if (!r.ok) throw new Error(`poll failed: ${r.status}`);
    // The frames are re-serialized here only to hand each over as text; 64-bit ids survive
    // because they are cut from the source text, not parsed as numbers.
    const text = await r.text();
    const answer = JSON.parse(text, (key, value, context) => (key === 'frames' ? rawFrames(context?.source, text) : value));
    for (const frame of answer.frames) this.onmessage?.(frame);
    this.lastEventId = answer.last_event_id;
    return !answer.closed;
  }

  async stream() {
    const r = await fetch(this.session, {
      headers: this.headers({ accept: 'text/event-stream', 'last-event-id': String(this.lastEventId) }),
      signal: this.aborter.signal,
    });
    if (r.status === 404 || r.status === 410 || r.status === 401) return false;
    if (!r.ok || !r.body) throw new Error(`event stream failed: ${r.status}`);
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return true; // ended: the next request tells whether the session did
      buffer += value;
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let id = null;
        let data = '';
        for (const line of event.split('\n')) {
          if (line.startsWith('id:')) id = line.slice(3).trim();
          else if (line.startsWith('data:')) data += line.slice(5).replace(/^ /, '');
        }
        if (id !== null && data) {
          this.lastEventId = Number(id);
          this.onmessage?.(data);
        }
      }
    }
  }

  end() {
    if (this.closed) return;
    this.closed = true;
    this.aborter.abort();
    this.onclose?.();
  }

  close() {
    this.onopen = this.onmessage = this.onclose = null;
    if (this.session && !this.closed) {
      fetch(this.session, { method: 'DELETE', headers: this.headers(), keepalive: true }).catch(() => {});
    }
    this.closed = true;
    this.aborter.abort();
  }
}

/**
 * The texts of the frames in a long-poll answer. `JSON.parse`'s reviver gives the source text of
 * primitives only, so the array is found in the answer's text and split at its top level.
 */
function rawFrames(_source, text) {
  const start = text.indexOf('"frames":[') + '"frames":['.length;
  const frames = [];
  let depth = 0;
  let inString = false;
  let from = start;
  for (let i = start; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (c === '{' || c === '[') depth++;
    else if (c === '}' || c === ']') {
      if (depth === 0) {
        if (i > from) frames.push(text.slice(from, i));
        break;
      }
      depth--;
    } else if (c === ',' && depth === 0) {
      frames.push(text.slice(from, i));
      from = i + 1;
    }
  }
  return frames;
}

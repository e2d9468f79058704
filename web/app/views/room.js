// A live room: danmaku (low-priority pushes) flying over the stage, high-priority pushes as
// banners, the online count. Switching rooms is a `join` on the same connection — no reload.
import { h, mount } from '../dom.js';

const LANES = 8;
const FLIGHT_MS = 9000;
const MAX_FLYING = 120;
const LOG_SIZE = 50;
const ROOM_NAME = /^[A-Za-z0-9_.:-]{1,64}$/;
const COLOR = /^#[0-9a-fA-F]{3}([0-9a-fA-F]{3})?$/;

/** The text of a push: a string, or a typical field of an object, else the JSON itself. */
export function pushText(data) {
  if (typeof data === 'string') return data;
  for (const key of ['danmaku', 'text', 'content', 'msg', 'message']) {
    if (typeof data?.[key] === 'string') return data[key];
  }
  return JSON.stringify(data);
}

/** "ann sent a rocket ×3" for a gift (`{"gift": "rocket", "count"?: 3, "from"?: "name"}`). */
function giftText(push) {
  const gift = push.data?.gift;
  if (typeof gift !== 'string' && typeof gift !== 'number') return null;
  const who = push.from?.nickname ?? (typeof push.data.from === 'string' ? push.data.from : 'Someone');
  const count = Number.isInteger(push.data.count) && push.data.count > 1 ? ` ×${push.data.count}` : '';
  return `${who} sent ${gift}${count}`;
}

/** What to tell a viewer whose post was refused, by the error's code. */
function postRefusal(err) {
  switch (err.code) {
    case 'muted': return `You are muted here. ${err.message}`;
    case 'rate_limited': return `Slow down: ${err.message}`;
    case 'forbidden': return `Not posted: ${err.message}`;
    case 'body_too_large': return 'That is too long to post.';
    default: return err.message;
  }
}

export class RoomView {
  constructor({ chat, conn }) {
    this.chat = chat;
    this.conn = conn;
    this.room = null;
    this.laneFree = new Array(LANES).fill(0);
    this.online = h('span', { id: 'room-online', class: 'online-count', 'aria-live': 'polite' });
    this.title = h('h2', { id: 'room-title' }, 'Live');
    this.stage = h('div', { id: 'stage', class: 'stage', 'aria-hidden': 'true' });
    this.banners = h('div', { id: 'banners', class: 'banners', role: 'status', 'aria-live': 'assertive' });
    this.log = h('ol', { id: 'danmaku-log', class: 'danmaku-log', 'aria-label': 'Recent danmaku', 'aria-live': 'polite' });
    this.error = h('p', { class: 'error', role: 'alert' });
    this.postError = h('p', { id: 'post-error', class: 'error', role: 'alert' });
    const say = h('input', { id: 'danmaku-input', maxlength: 100, placeholder: 'Say something', autocomplete: 'off' });
    this.postForm = h('form', {
      id: 'danmaku-form', class: 'row', hidden: true,
      onsubmit: async (e) => {
        e.preventDefault();
        const text = say.value.trim();
        if (!text || !this.room) return;
        this.postError.textContent = '';
        try {
          await this.conn.request({ op: 'publish', room: this.room, data: { danmaku: text }, priority: 'low' });
          say.value = '';
        } catch (err) {
          this.postError.textContent = postRefusal(err);
        }
      },
    }, h('label', { for: 'danmaku-input', class: 'visually-hidden' }, 'Danmaku'), say,
    h('button', { type: 'submit', id: 'send-danmaku', class: 'primary' }, 'Send'));
    const input = h('input', { id: 'room-input', required: true, maxlength: 64, pattern: '[A-Za-z0-9_.:\\-]{1,64}', placeholder: 'live-1' });
    const form = h('form', {
      id: 'room-form', class: 'row',
      onsubmit: (e) => {
        e.preventDefault();
        location.hash = `#/live/${encodeURIComponent(input.value.trim())}`;
      },
    }, h('label', { for: 'room-input' }, 'Room'), input, h('button', { type: 'submit', id: 'join-room', class: 'primary' }, 'Enter'));
    this.el = h('section', { class: 'live' },
      h('div', { class: 'row' }, this.title, this.online), form, this.error,
      h('div', { class: 'stage-wrap' }, this.stage, this.banners), this.postForm, this.postError,
      h('h3', {}, 'Recent'), this.log);
    this.onPush = (e) => this.onPushEvent(e.detail);
    chat.addEventListener('push', this.onPush);
    this.onFrame = (e) => {
      const f = e.detail.frame;
      if (f.op === 'online' && f.room === this.room) this.setOnline(f.count);
      if (f.op === 'room_events' && f.room === this.room) this.roomEvents(f);
      if (f.op === 'room_history' && f.room === this.room && f.gap) {
        this.log.prepend(h('li', { class: 'notice' }, 'Some messages were missed while you were away.'));
      }
      if (f.op === 'kicked' && f.room === this.room) {
        this.kicked = f.room;
        this.postForm.hidden = true;
        this.error.textContent = `You were removed from this room by its moderators${f.reason ? `: ${f.reason}` : ''}.`;
      }
    };
    conn.addEventListener('frame', this.onFrame);
    this.onReady = () => { if (this.room && this.kicked !== this.room) this.join(this.room); };
    conn.addEventListener('ready', this.onReady);
  }

  destroy() {
    this.chat.removeEventListener('push', this.onPush);
    this.conn.removeEventListener('frame', this.onFrame);
    this.conn.removeEventListener('ready', this.onReady);
    if (this.room) this.conn.request({ op: 'leave' }).catch(() => {});
  }

  show(room) {
    if (!room || room === this.room) return;
    if (!ROOM_NAME.test(room)) {
      this.error.textContent = 'Room names are 1–64 letters, digits or . _ : -';
      return;
    }
    this.room = room;
    this.kicked = null;
    this.lastPush = null;
    this.title.textContent = `Live: ${room}`;
    document.getElementById('room-input').value = room;
    mount(this.stage);
    mount(this.log);
    this.online.textContent = '';
    this.join(room);
  }

  async join(room) {
    this.error.textContent = '';
    try {
      // The room's recent posts on entry; after a reconnect, those since the last one seen.
      const joined = await this.conn.request({ op: 'join', room, recent: this.lastPush ?? 0 });
      if (room === this.room) {
        this.setOnline(joined.online);
        // Posting needs an account: an anonymous viewer only watches.
        this.postForm.hidden = !this.chat.me;
      }
    } catch (e) {
      this.error.textContent = e.message;
    }
  }

  setOnline(count) {
    this.online.textContent = `${count} watching`;
    this.online.dataset.count = count;
  }

  onPushEvent({ push, scope }) {
    if (!this.room) return;
    if (scope?.kind === 'room' && scope.room !== this.room) return; // a late frame of the previous room
    if (scope?.kind === 'user' || scope?.kind === 'device') return;
    if (scope?.kind === 'room') this.lastPush = push.msg_id;
    const said = giftText(push) ?? pushText(push.data);
    // A viewer's post carries its author, named by the server.
    const text = push.from && !push.data?.gift ? `${push.from.nickname}: ${said}` : said;
    const color = typeof push.data?.color === 'string' && COLOR.test(push.data.color) ? push.data.color : null;
    if (push.priority === 'high') this.banner(text);
    else this.fly(text, color);
    this.log.prepend(h('li', { class: push.priority === 'high' ? 'high' : 'low' }, text));
    while (this.log.children.length > LOG_SIZE) this.log.lastChild.remove();
  }

  /** "Welcome alice, bob and 3 others" / "carol left", as notices in the log. */
  roomEvents(f) {
    const say = (users, more, verb) => {
      if (!users?.length && !more) return;
      const names = (users ?? []).map((u) => u.nickname || `user ${u.user_id}`);
      if (more) names.push(`${more} other${more === 1 ? '' : 's'}`);
      const list = names.length > 1 ? `${names.slice(0, -1).join(', ')} and ${names.at(-1)}` : names[0];
      this.log.prepend(h('li', { class: 'notice' }, `${list} ${verb}`));
    };
    say(f.entered, f.more_entered, 'entered');
    say(f.left, f.more_left, 'left');
    while (this.log.children.length > LOG_SIZE) this.log.lastChild.remove();
  }

  banner(text) {
    const el = h('div', { class: 'banner' }, text);
    this.banners.append(el);
    setTimeout(() => el.remove(), 6000);
  }

  fly(text, color) {
    while (this.stage.children.length >= MAX_FLYING) this.stage.firstChild.remove();
    const now = performance.now();
    let lane = 0;
    for (let i = 1; i < LANES; i++) if (this.laneFree[i] < this.laneFree[lane]) lane = i;
    this.laneFree[lane] = now + 1200;
    const el = h('span', { class: 'danmaku' }, text);
    el.style.top = `${lane * 2.1 + 0.4}em`;
    if (color) el.style.color = color;
    this.stage.append(el);
    const width = this.stage.clientWidth;
    el.animate([{ transform: `translateX(${width}px)` }, { transform: `translateX(-${el.offsetWidth + 20}px)` }],
      { duration: FLIGHT_MS, easing: 'linear' }).finished.then(() => el.remove(), () => {});
  }
}

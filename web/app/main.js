// Entry point: session handling (login, staying logged in across reloads), the app shell with
// its always-visible connection state, and hash routing between chats, friends and live rooms.
import { Api, request } from './api.js';
import { Chat } from './chat.js';
import { Connection } from './connection.js';
import { h, mount } from './dom.js';
import { renderLogin } from './views/login.js';
import { ChatsView } from './views/chats.js';
import { FriendsView } from './views/friends.js';
import { RoomView } from './views/room.js';
import { ProfileDialog, meButton } from './views/profile.js';

const SESSION_KEY = 'tern.session';
const DEVICE_KEY = 'tern.device';
const root = document.getElementById('app');

/** One device id per browser profile: what the server resumes and replaces by. */
function deviceId() {
  let id = localStorage.getItem(DEVICE_KEY);
  if (!id) {
    id = 'web-' + Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) => b.toString(16).padStart(2, '0')).join('');
    localStorage.setItem(DEVICE_KEY, id);
  }
  return id;
}

/** The stored session if its token is still good for a while. Only the token is kept, never a password. */
function storedSession() {
  try {
    const s = JSON.parse(localStorage.getItem(SESSION_KEY));
    if (s && s.token && s.expires_at * 1000 > Date.now() + 60_000) return s;
  } catch {
    // fall through to the login form
  }
  localStorage.removeItem(SESSION_KEY);
  return null;
}

async function login(username, password, register) {
  if (register) await request('POST', '/v1/users', { body: { username, password } });
  const s = await request('POST', '/v1/sessions', { body: { username, password, device_id: deviceId() } });
  const session = { ...s, username };
  localStorage.setItem(SESSION_KEY, JSON.stringify(session));
  return session;
}

function showLogin(message) {
  document.title = 'tern — log in';
  renderLogin(root, { message, onSubmit: async (u, p, register) => start(await login(u, p, register)) });
}

let current = null;

/**
 * `message` set: the session ended by itself (expired, or ended elsewhere); unsent messages are
 * kept for the next login. Otherwise the user logs out: the server voids this device's token
 * and closes its sockets, and the unsent messages are deleted from this browser.
 */
function logout(message) {
  const session = storedSession();
  if (!message && session) {
    localStorage.removeItem(`tern.outbox.${session.user_id}`);
    request('DELETE', '/v1/sessions/current', { token: session.token }).catch(() => {});
  }
  localStorage.removeItem(SESSION_KEY);
  current?.stop();
  current = null;
  showLogin(message);
}

async function start(session) {
  const api = new Api(session.token, () => logout('Your session has expired. Please log in again.'));
  const me = { user_id: session.user_id, username: session.username };
  const status = h('span', { id: 'conn-state', class: 'conn', role: 'status', 'aria-live': 'polite' }, 'connecting…');
  let chat;
  const conn = new Connection({ token: session.token, resume: () => chat.resumeMap() });
  chat = new Chat({ me, api, conn });
  const app = new App({ session, api, conn, chat, status });
  current = app;
  app.render();
  // The lists give the resume positions: connect only once they are loaded, or a reconnect
  // would ask for every conversation's whole history. The server may be down: retry.
  for (let attempt = 0; ; attempt++) {
    try {
      await chat.load();
      break;
    } catch (e) {
      if (e.code === 'unauthorized' || current !== app) return;
      const delay = Math.round(Math.min(30_000, 500 * 2 ** attempt) * (0.5 + Math.random() / 2));
      app.showState({ state: 'waiting', retryAt: Date.now() + delay });
      await new Promise((r) => setTimeout(r, delay));
      if (current !== app) return;
    }
  }
  conn.start();
}

class App {
  constructor({ session, api, conn, chat, status }) {
    Object.assign(this, { session, api, conn, chat, status });
    this.tick = null;
    conn.addEventListener('state', (e) => this.showState(e.detail));
    conn.addEventListener('ready', () => {
      // After a reconnect, catch up on lists that may have changed while away.
      if (this.wasOnline) this.chat.refreshConvs().catch(() => {});
      this.wasOnline = true;
    });
    this.onHash = () => this.route();
    window.addEventListener('hashchange', this.onHash);
  }

  render() {
    document.title = 'tern';
    this.main = h('main', { id: 'main' });
    // Screen readers hear new messages here, not by re-reading the whole thread.
    const announcer = h('div', { class: 'visually-hidden', role: 'status', 'aria-live': 'polite', id: 'announcer' });
    this.chat.addEventListener('incoming', ({ detail: { msg, text } }) => {
      announcer.textContent = `${this.chat.nameOf(msg.from)} in ${this.chat.titleOf(msg.conv_id)}: ${text}`;
    });
    const nav = h('nav', { 'aria-label': 'Sections' },
      h('a', { href: '#/chats', id: 'nav-chats' }, 'Chats'),
      h('a', { href: '#/friends', id: 'nav-friends' }, 'Friends'),
      h('a', { href: '#/live', id: 'nav-live' }, 'Live'));
    const profile = new ProfileDialog({ api: this.api, onChange: (me) => meEl.show(me) });
    const meEl = meButton(this.session, () => profile.open());
    this.api.get('/v1/me').then((me) => meEl.show(me)).catch(() => {});
    const header = h('header', {},
      h('span', { class: 'brand' }, 'tern'), nav, this.status,
      meEl,
      h('button', { type: 'button', id: 'logout', onclick: () => logout() }, 'Log out'));
    mount(root, header, this.main, announcer);
    this.route();
  }

  route() {
    const [, section = 'chats', ...rest] = location.hash.split('/');
    const arg = rest.length ? decodeURIComponent(rest.join('/')) : null;
    for (const a of root.querySelectorAll('nav a')) {
      if (a.id === `nav-${section}`) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    if (section !== this.section) {
      this.view?.destroy();
      this.section = section;
      const ctx = { chat: this.chat, api: this.api, conn: this.conn };
      this.view = section === 'friends' ? new FriendsView(ctx) : section === 'live' ? new RoomView(ctx) : new ChatsView(ctx);
      mount(this.main, this.view.el);
    }
    this.view.show?.(arg);
  }

  showState({ state, transport, retryAt, reason, message }) {
    clearInterval(this.tick);
    this.status.dataset.state = state;
    if (transport) this.status.dataset.transport = transport;
    // WebSocket is the usual carrier; a fallback is named, so a slow page can be explained.
    const via = { sse: ' (via SSE)', longpoll: ' (via long-poll)' }[transport] ?? '';
    if (state === 'online') this.status.textContent = `online${via}`;
    else if (state === 'connecting') this.status.textContent = 'connecting…';
    else if (state === 'waiting') {
      const show = () => {
        const s = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
        this.status.textContent = `offline — reconnecting in ${s}s`;
      };
      show();
      this.tick = setInterval(show, 1000);
      this.status.title = message ?? '';
    } else if (reason === 'auth_failed') {
      logout('Your session has expired. Please log in again.');
    } else if (reason === 'replaced') {
      this.status.textContent = 'opened on another tab or window';
      const again = h('button', { type: 'button', id: 'use-here', onclick: () => { again.remove(); this.conn.start(); } }, 'Use here');
      this.status.after(again);
    } else if (reason !== 'logout') {
      this.status.textContent = `disconnected: ${message ?? reason}`;
    }
  }

  stop() {
    clearInterval(this.tick);
    window.removeEventListener('hashchange', this.onHash);
    this.view?.destroy();
    this.conn.stop();
    this.chat.stop();
  }
}

const session = storedSession();
if (session) start(session);
else showLogin();

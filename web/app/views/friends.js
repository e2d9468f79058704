// Finding people, friend requests both ways, the friend list with presence, and blocking.
import { h, mount } from '../dom.js';
import { directConv } from '../chat.js';

export class FriendsView {
  constructor({ chat, api }) {
    this.chat = chat;
    this.api = api;
    this.results = h('ul', { id: 'search-results', class: 'people' });
    this.lists = h('div', { id: 'friend-lists' });
    this.error = h('p', { class: 'error', role: 'alert', id: 'friends-error' });
    const query = h('input', { id: 'search-input', type: 'search', placeholder: 'username starts with…', required: true, maxlength: 32 });
    const form = h('form', {
      id: 'search-form', class: 'row', role: 'search',
      onsubmit: async (e) => {
        e.preventDefault();
        this.found = await this.try(() => api.get(`/v1/users?prefix=${encodeURIComponent(query.value.trim())}&limit=20`));
        this.render();
      },
    }, h('label', { for: 'search-input' }, 'Find people'), query, h('button', { type: 'submit', id: 'search' }, 'Search'));
    this.el = h('section', { class: 'friends' }, h('h2', {}, 'Friends'), form, this.error, this.results, this.lists);
    this.onChange = () => this.render();
    chat.addEventListener('friends', this.onChange);
    chat.refreshFriends().catch(() => {});
    this.render();
  }

  destroy() {
    this.chat.removeEventListener('friends', this.onChange);
  }

  async try(fn) {
    this.error.textContent = '';
    try {
      return await fn();
    } catch (e) {
      this.error.textContent = e.message;
      return undefined;
    }
  }

  act(fn) {
    return this.try(async () => {
      await fn();
      await this.chat.refreshFriends();
    });
  }

  person(userId, ...buttons) {
    const p = this.chat.profileOf(userId);
    const name = p ? (p.nickname ? `${p.nickname} (${p.username})` : p.username) : `user ${userId}`;
    return h('li', { 'data-user': userId }, h('span', { class: 'name' }, name), ...buttons);
  }

  button(label, fn, extra = {}) {
    return h('button', { type: 'button', class: 'link', ...extra, onclick: fn }, label);
  }

  render() {
    const { chat, api } = this;
    const f = chat.friends;
    const me = chat.me.user_id;
    const friendIds = new Set(f.friends.map((x) => x.user_id));
    const blocked = new Set(f.blocked);
    const pending = new Set([...f.incoming, ...f.outgoing].map((r) => r.user_id));
    mount(this.results, (this.found ?? []).filter((p) => p.user_id !== me).map((p) => {
      this.chat.profiles.set(p.user_id, this.chat.profiles.get(p.user_id) ?? p);
      return this.person(p.user_id,
        friendIds.has(p.user_id) ? h('span', { class: 'muted' }, 'friend')
          : pending.has(p.user_id) ? h('span', { class: 'muted' }, 'request pending')
            : this.button('Add friend', () => this.act(() => api.post('/v1/friends/requests', { user_id: p.user_id })), { 'data-action': 'add' }),
        this.button('Message', () => { location.hash = `#/chats/${directConv(me, p.user_id)}`; }));
    }));
    const online = (x) => h('span', { class: x.online ? 'dot online' : 'dot', title: x.online ? 'online' : 'offline', 'aria-label': x.online ? 'online' : 'offline', role: 'img' });
    mount(this.lists,
      f.incoming.length ? h('section', { 'aria-label': 'Requests to you' }, h('h3', {}, 'Requests to you'), h('ul', { id: 'incoming', class: 'people' },
        f.incoming.map((r) => this.person(r.user_id,
          r.message ? h('span', { class: 'muted' }, `“${r.message}”`) : null,
          this.button('Accept', () => this.act(() => api.post(`/v1/friends/requests/${r.user_id}/accept`)), { 'data-action': 'accept' }),
          this.button('Decline', () => this.act(() => api.post(`/v1/friends/requests/${r.user_id}/decline`)), { 'data-action': 'decline' }))))) : null,
      f.outgoing.length ? h('section', {}, h('h3', {}, 'Your requests'), h('ul', { id: 'outgoing', class: 'people' },
        f.outgoing.map((r) => this.person(r.user_id, h('span', { class: 'muted' }, 'waiting'))))) : null,
      h('section', {}, h('h3', {}, `Friends (${f.friends.length})`), h('ul', { id: 'friend-list', class: 'people' },
        f.friends.length ? f.friends.map((x) => this.person(x.user_id, online(x),
          this.button('Message', () => { location.hash = `#/chats/${directConv(me, x.user_id)}`; }, { 'data-action': 'message' }),
          this.button('Remove', () => this.act(() => api.delete(`/v1/friends/${x.user_id}`))),
          this.button('Block', () => this.act(() => api.put(`/v1/blocks/${x.user_id}`)), { 'data-action': 'block' })))
          : h('li', { class: 'empty' }, 'Search for people above and add them.'))),
      blocked.size ? h('section', {}, h('h3', {}, 'Blocked'), h('ul', { id: 'blocked', class: 'people' },
        [...blocked].map((id) => this.person(id, this.button('Unblock', () => this.act(() => api.delete(`/v1/blocks/${id}`)), { 'data-action': 'unblock' }))))) : null);
    // People found by search can be blocked too (a stranger who keeps writing).
    for (const li of this.results.children) {
      const id = Number(li.dataset.user);
      if (!blocked.has(id)) li.append(this.button('Block', () => this.act(() => api.put(`/v1/blocks/${id}`)), { 'data-action': 'block' }));
    }
  }
}

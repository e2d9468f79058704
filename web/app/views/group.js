// A group's members with their roles, invitations, join requests, kicking and leaving.
import { h, mount } from '../dom.js';

const RANK = { owner: 3, admin: 2, member: 1 };

export class GroupPanel {
  constructor({ chat, api, conv }) {
    this.chat = chat;
    this.api = api;
    this.conv = conv;
    this.groupId = conv.slice(2);
    this.el = h('aside', { id: 'group-panel', class: 'group-panel', 'aria-label': 'Group members' });
    // Built once, so a re-render (a member joined meanwhile) never wipes what is being typed.
    const invitee = h('input', { id: 'invite-username', placeholder: 'username', required: true });
    this.invite = h('form', {
      id: 'invite-form', class: 'row',
      onsubmit: (e) => {
        e.preventDefault();
        this.act(async () => {
          const user = await this.api.get(`/v1/users/by-name/${encodeURIComponent(invitee.value.trim())}`);
          await this.api.post(`/v1/groups/${this.groupId}/members`, { user_id: user.user_id });
          invitee.value = '';
        });
      },
    }, h('label', { for: 'invite-username', class: 'visually-hidden' }, 'Invite by username'), invitee,
    h('button', { type: 'submit', id: 'invite' }, 'Invite'));
    this.onGroup = (e) => { if (e.detail.conv === conv) this.load(); };
    chat.addEventListener('group', this.onGroup);
    this.onProfiles = () => this.render();
    chat.addEventListener('friends', this.onProfiles);
    this.load();
  }

  destroy() {
    this.chat.removeEventListener('group', this.onGroup);
    this.chat.removeEventListener('friends', this.onProfiles);
  }

  async load() {
    try {
      this.group = await this.api.get(`/v1/groups/${this.groupId}`);
      this.error = null;
    } catch (e) {
      this.error = e.message;
    }
    this.render();
  }

  async act(fn) {
    try {
      await fn();
      this.error = null;
      await this.load();
    } catch (e) {
      this.error = e.message;
      this.render();
    }
  }

  render() {
    const { chat, group } = this;
    if (!group) {
      mount(this.el, h('p', { class: 'error', role: 'alert' }, this.error ?? 'Loading…'));
      return;
    }
    const me = group.members.find((m) => m.user_id === chat.me.user_id);
    const myRank = RANK[me?.role] ?? 0;
    const members = [...group.members].sort((a, b) => RANK[b.role] - RANK[a.role] || a.user_id - b.user_id);
    mount(this.el,
      h('h3', {}, `${group.name} · ${group.members.length} members`),
      h('p', { class: 'muted' }, `group id ${group.group_id}${group.muted_all ? ' · muted' : ''}`),
      this.error ? h('p', { class: 'error', role: 'alert' }, this.error) : null,
      h('ul', { id: 'member-list', class: 'members' }, members.map((m) => h('li', { 'data-user': m.user_id },
        h('span', { class: 'name' }, chat.nameOf(m.user_id)),
        h('span', { class: `role role-${m.role}` }, m.role),
        myRank > RANK[m.role] ? h('button', { type: 'button', class: 'link', 'aria-label': `Remove ${chat.nameOf(m.user_id)}`,
          onclick: () => this.act(() => this.api.delete(`/v1/groups/${this.groupId}/members/${m.user_id}`)) }, 'Remove') : null))),
      group.requests?.length ? h('div', {}, h('h4', {}, 'Join requests'), h('ul', { class: 'members' }, group.requests.map((r) => h('li', {},
        h('span', { class: 'name' }, chat.nameOf(r.user_id)), r.message ? h('span', { class: 'muted' }, r.message) : null,
        h('button', { type: 'button', class: 'link', onclick: () => this.act(() => this.api.post(`/v1/groups/${this.groupId}/requests/${r.user_id}/approve`)) }, 'Approve'),
        h('button', { type: 'button', class: 'link', onclick: () => this.act(() => this.api.post(`/v1/groups/${this.groupId}/requests/${r.user_id}/decline`)) }, 'Decline'))))) : null,
      this.invite,
      h('button', { type: 'button', id: 'leave-group', class: 'danger',
        onclick: async () => {
          try {
            await this.api.post(`/v1/groups/${this.groupId}/leave`);
            location.hash = '#/chats';
            await chat.refreshConvs();
          } catch (e) {
            this.error = e.message;
            this.render();
          }
        } }, 'Leave group'));
  }
}

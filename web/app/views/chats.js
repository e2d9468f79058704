// Conversation list + chat pane (+ the group panel for group conversations).
import { h, mount, clock } from '../dom.js';
import { isContent } from '../chat.js';
import { EMOTICONS, bodyText } from '../text.js';
import { GroupPanel } from './group.js';
import { Downloads, humanSize, upload } from '../files.js';

const RECALL_WINDOW_MS = 120_000;

export class ChatsView {
  constructor({ chat, api }) {
    this.chat = chat;
    this.api = api;
    this.downloads = new Downloads(api.token);
    this.uploads = []; // {conv, name, sent, total, error} while files go up
    this.conv = undefined; // nothing shown yet (null: no conversation chosen)
    this.list = h('ul', { id: 'conv-list', class: 'conv-list' });
    this.pane = h('section', { id: 'chat-pane', class: 'pane', 'aria-label': 'Conversation' });
    const name = h('input', { id: 'group-name', required: true, maxlength: 64, placeholder: 'Group name' });
    const policy = h('select', { id: 'group-policy' }, h('option', { value: 'open' }, 'Anyone invited joins'), h('option', { value: 'approval' }, 'Admins approve'));
    const error = h('p', { class: 'error', role: 'alert' });
    this.groupForm = h('form', {
      id: 'new-group-form', class: 'stack', hidden: true,
      onsubmit: async (e) => {
        e.preventDefault();
        try {
          const g = await api.post('/v1/groups', { name: name.value.trim(), join_policy: policy.value });
          name.value = '';
          this.groupForm.hidden = true;
          await chat.refreshConvs();
          location.hash = `#/chats/${g.conv_id}`;
        } catch (err) {
          error.textContent = err.message;
        }
      },
    }, h('label', { for: 'group-name' }, 'Group name'), name, h('label', { for: 'group-policy' }, 'Joining'), policy, error,
    h('button', { type: 'submit', id: 'create-group', class: 'primary' }, 'Create group'));
    this.el = h('div', { class: 'chats' },
      h('aside', { class: 'sidebar', 'aria-label': 'Conversations' },
        h('div', { class: 'row' },
          h('h2', {}, 'Chats'),
          h('button', { type: 'button', id: 'new-group', 'aria-expanded': 'false', onclick: (e) => {
            this.groupForm.hidden = !this.groupForm.hidden;
            e.target.setAttribute('aria-expanded', String(!this.groupForm.hidden));
            if (!this.groupForm.hidden) name.focus();
          } }, 'New group')),
        this.groupForm, this.list),
      this.pane);
    this.handlers = {
      convs: () => this.renderList(),
      messages: (e) => { if (e.detail.conv === this.conv) this.renderMessages(); },
      typing: (e) => { if (e.detail.conv === this.conv) this.renderTyping(); },
    };
    for (const [type, fn] of Object.entries(this.handlers)) chat.addEventListener(type, fn);
    this.onVisible = () => { if (this.conv) chat.markRead(this.conv); };
    document.addEventListener('visibilitychange', this.onVisible);
    this.renderList();
  }

  destroy() {
    for (const [type, fn] of Object.entries(this.handlers)) this.chat.removeEventListener(type, fn);
    document.removeEventListener('visibilitychange', this.onVisible);
    this.groupPanel?.destroy();
    this.chat.setOpen(null);
  }

  renderList() {
    const { chat } = this;
    const convs = [...chat.convs.values()].sort((a, b) => b.last_ts - a.last_ts || (a.conv_id < b.conv_id ? -1 : 1));
    if (convs.length === 0) {
      mount(this.list, h('li', { class: 'empty' }, 'No conversations yet. Find people under Friends.'));
      return;
    }
    mount(this.list, convs.map((c) => {
      const last = c.last_message;
      const preview = last ? `${last.from === chat.me.user_id && isContent(last.body) ? 'You: ' : ''}${bodyText(last.body, (u) => chat.nameOf(u))}` : '';
      const title = chat.titleOf(c.conv_id);
      return h('li', {},
        h('a', { href: `#/chats/${c.conv_id}`, class: 'conv', 'data-conv': c.conv_id, 'aria-current': c.conv_id === this.conv ? 'true' : null,
          'aria-label': `${title}${c.unread ? `, ${c.unread} unread` : ''}` },
        h('span', { class: 'conv-title' }, title),
        h('time', {}, c.last_ts ? clock(c.last_ts) : ''),
        h('span', { class: 'conv-preview' }, preview),
        c.unread ? h('span', { class: 'badge', 'data-unread': c.unread }, c.unread > 99 ? '99+' : String(c.unread)) : null));
    }));
  }

  show(conv = null) {
    if (conv === this.conv) return;
    this.conv = conv;
    this.groupPanel?.destroy();
    this.groupPanel = null;
    this.chat.setOpen(conv);
    this.renderList();
    if (!conv) {
      mount(this.pane, h('p', { class: 'empty' }, 'Choose a conversation, or find people under Friends.'));
      return;
    }
    this.typingEl = h('span', { class: 'typing', id: 'typing', 'aria-live': 'polite' });
    this.messagesEl = h('ol', { id: 'messages', class: 'messages', 'aria-label': 'Messages', tabindex: 0 });
    this.messagesEl.addEventListener('scroll', () => {
      if (this.messagesEl.scrollTop < 40) this.older();
    });
    const input = h('textarea', { id: 'composer-input', rows: 2, maxlength: 4000, placeholder: 'Message (Enter sends, Shift+Enter: new line)' });
    input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        form.requestSubmit();
      }
    });
    input.addEventListener('input', () => this.chat.sendTyping(conv));
    // Files: the attach button, pasting an image, or dropping files on the thread.
    input.addEventListener('paste', (e) => {
      if (e.clipboardData?.files.length) {
        e.preventDefault();
        this.attach(conv, [...e.clipboardData.files]);
      }
    });
    const picker = h('input', { type: 'file', id: 'attach-input', multiple: true, class: 'visually-hidden', tabindex: -1,
      onchange: () => { this.attach(conv, [...picker.files]); picker.value = ''; } });
    const attachButton = h('button', { type: 'button', id: 'attach', 'aria-label': 'Attach files', title: 'Attach files', onclick: () => picker.click() }, '📎');
    const stickersButton = h('button', { type: 'button', id: 'stickers', 'aria-label': 'Stickers', title: 'Stickers', 'aria-expanded': 'false',
      onclick: () => this.toggleStickers(conv, stickersButton) }, '😊');
    this.uploadsEl = h('ul', { id: 'uploads', class: 'uploads', 'aria-live': 'polite' });
    const form = h('form', {
      id: 'composer', class: 'composer',
      onsubmit: (e) => {
        e.preventDefault();
        const text = input.value.trim();
        if (!text) return;
        input.value = '';
        this.stick = true;
        this.chat.send(conv, { type: 'text', text });
      },
    }, attachButton, stickersButton, picker, h('label', { for: 'composer-input', class: 'visually-hidden' }, 'Message'), input,
    h('button', { type: 'submit', id: 'send', class: 'primary' }, 'Send'));
    const isGroup = conv.startsWith('g:');
    const header = h('div', { class: 'pane-header' },
      h('h2', { id: 'chat-title' }, this.chat.titleOf(conv)), this.typingEl,
      isGroup ? h('button', { type: 'button', id: 'show-members', onclick: () => this.toggleMembers() }, 'Members') : null);
    const thread = h('div', { class: 'thread' }, this.messagesEl, this.uploadsEl, form);
    thread.addEventListener('dragover', (e) => e.preventDefault());
    thread.addEventListener('drop', (e) => {
      e.preventDefault();
      if (e.dataTransfer?.files.length) this.attach(conv, [...e.dataTransfer.files]);
    });
    this.body = h('div', { class: 'pane-body' }, thread);
    mount(this.pane, header, this.body);
    this.renderUploads();
    this.stick = true;
    this.renderMessages();
    this.older();
    input.focus();
  }

  /** Uploads files (resumably), then sends each as an image or a file message. */
  attach(conv, files) {
    for (const file of files) {
      const item = { conv, name: file.name, sent: 0, total: file.size, error: null };
      this.uploads.push(item);
      this.renderUploads();
      upload(this.api.token, file, (sent, total) => { item.sent = sent; item.total = total; this.renderUploads(); })
        .then((info) => {
          this.uploads = this.uploads.filter((u) => u !== item);
          this.renderUploads();
          this.stick = true;
          const body = info.width
            ? { type: 'image', file_id: info.id, width: info.width, height: info.height }
            : { type: 'file', file_id: info.id, name: info.name || file.name || 'file', size: info.size };
          this.chat.send(conv, body);
        })
        .catch((e) => { item.error = e.message; this.renderUploads(); });
    }
  }

  renderUploads() {
    if (!this.uploadsEl) return;
    mount(this.uploadsEl, this.uploads.filter((u) => u.conv === this.conv).map((u) => h('li', { class: u.error ? 'error' : '' },
      h('span', { class: 'upload-name' }, u.name),
      u.error ? h('span', {}, ` — not sent: ${u.error} `) : h('progress', { max: u.total || 1, value: u.sent, 'aria-label': `Uploading ${u.name}` }),
      u.error ? h('button', { type: 'button', class: 'link', onclick: () => { this.uploads = this.uploads.filter((x) => x !== u); this.renderUploads(); } }, 'Dismiss') : null)));
  }

  /** The sticker picker: the built-in emoticons, then the user's own stickers. */
  async toggleStickers(conv, button) {
    const open = document.getElementById('sticker-picker');
    if (open) {
      open.remove();
      button.setAttribute('aria-expanded', 'false');
      return;
    }
    const send = (body) => {
      panel.remove();
      button.setAttribute('aria-expanded', 'false');
      this.stick = true;
      this.chat.send(conv, body);
    };
    const panel = h('div', { id: 'sticker-picker', class: 'sticker-picker', role: 'dialog', 'aria-label': 'Stickers' },
      h('div', { class: 'emoticons' }, Object.entries(EMOTICONS).map(([code, glyph]) =>
        h('button', { type: 'button', 'data-code': code, title: code.replaceAll('_', ' '), onclick: () => send({ type: 'sticker', code }) }, glyph))));
    button.closest('form').before(panel);
    button.setAttribute('aria-expanded', 'true');
    try {
      const { stickers } = await this.api.get('/v1/me/stickers');
      panel.append(h('div', { class: 'custom-stickers' }, stickers.map((st) => {
        const img = h('img', { alt: 'sticker' });
        this.downloads.url(st.file_id, { thumb: true }).then((u) => { img.src = u; }).catch(() => {});
        return h('button', { type: 'button', class: 'custom-sticker', 'data-file': st.file_id, onclick: () => send({ type: 'sticker', file_id: st.file_id }) }, img);
      })));
    } catch (e) {
      panel.append(h('p', { class: 'error', role: 'alert' }, e.message));
    }
  }

  /** Keeps an image (own or received) among the user's stickers. */
  async keepSticker(fileId, button) {
    try {
      await this.api.put(`/v1/me/stickers/${encodeURIComponent(fileId)}`);
      button.textContent = 'Added to stickers';
      button.disabled = true;
    } catch (e) {
      button.textContent = e.message;
    }
  }

  /** A message's content: text, or an image (thumbnail; click for the full one), or a file card. */
  content(m) {
    const { chat } = this;
    if (m.body.type === 'sticker' && m.body.code) {
      return h('p', { class: 'text sticker' }, h('span', { class: 'emoticon', 'data-code': m.body.code }, EMOTICONS[m.body.code] ?? `:${m.body.code}:`));
    }
    if (m.body.type === 'sticker' && m.body.file_id) {
      const img = h('img', { class: 'sticker-image', alt: 'sticker' });
      this.downloads.url(m.body.file_id, { thumb: true }).then((u) => { img.src = u; }).catch(() => { img.alt = 'sticker unavailable'; });
      return h('p', { class: 'text sticker' }, img);
    }
    if (m.body.type === 'image') {
      const img = h('img', { class: 'thumb', alt: 'image', width: m.body.width, height: m.body.height });
      this.downloads.url(m.body.file_id, { thumb: true })
        .catch(() => this.downloads.url(m.body.file_id))
        .then((u) => { img.src = u; })
        .catch(() => { img.alt = 'image unavailable'; });
      return h('p', { class: 'text' }, h('button', { type: 'button', class: 'image', 'aria-label': 'Open image', onclick: () => this.view(m.body.file_id) }, img));
    }
    if (m.body.type === 'file') {
      return h('p', { class: 'text file-card' },
        h('span', { class: 'file-name' }, m.body.name), h('span', { class: 'file-size' }, humanSize(m.body.size)),
        h('button', { type: 'button', class: 'link download', onclick: (e) => this.downloads.save(m.body.file_id, m.body.name).catch((err) => { e.target.textContent = err.message; }) }, 'Download'));
    }
    return h('p', { class: 'text' }, bodyText(m.body, (u) => chat.nameOf(u)));
  }

  /** The full image in a dialog. */
  async view(fileId) {
    const img = h('img', { alt: 'image', class: 'full' });
    const dialog = h('dialog', { id: 'viewer', class: 'viewer', onclick: () => dialog.close(), onclose: () => dialog.remove() }, img);
    document.body.append(dialog);
    dialog.showModal();
    try {
      img.src = await this.downloads.url(fileId);
    } catch (e) {
      img.alt = e.message;
    }
  }

  toggleMembers() {
    if (this.groupPanel) {
      this.groupPanel.destroy();
      this.groupPanel.el.remove();
      this.groupPanel = null;
      return;
    }
    this.groupPanel = new GroupPanel({ chat: this.chat, api: this.api, conv: this.conv });
    this.body.append(this.groupPanel.el);
  }

  async older() {
    const conv = this.conv;
    if (this.loading || this.chat.windowOf(conv).complete) return;
    this.loading = true;
    try {
      await this.chat.loadOlder(conv);
    } catch (e) {
      if (conv === this.conv) this.messagesEl.before(h('p', { class: 'error', role: 'alert' }, e.message));
    } finally {
      this.loading = false;
    }
  }

  renderTyping() {
    this.typingEl.textContent = this.chat.isTyping(this.conv) ? 'typing…' : '';
  }

  renderMessages() {
    const { chat, conv } = this;
    const el = this.messagesEl;
    const nearBottom = this.stick || el.scrollHeight - el.scrollTop - el.clientHeight < 60;
    const fromBottom = el.scrollHeight - el.scrollTop;
    const summary = chat.convs.get(conv);
    document.getElementById('chat-title').textContent = chat.titleOf(conv);
    const w = chat.windowOf(conv);
    const seqs = [...w.messages.keys()].sort((a, b) => a - b);
    const items = [];
    if (w.complete) items.push(h('li', { class: 'start' }, 'Start of the conversation'));
    else items.push(h('li', { class: 'start' }, h('button', { type: 'button', class: 'link', id: 'load-older', onclick: () => this.older() }, 'Load earlier messages')));
    for (const seq of seqs) {
      const m = w.messages.get(seq);
      if (m.body.type === 'notice') {
        if (m.body.notice.kind === 'recall') continue; // shown as the tombstone itself
        items.push(h('li', { class: 'notice', 'data-seq': seq }, bodyText(m.body, (u) => chat.nameOf(u))));
        continue;
      }
      const mine = m.from === chat.me.user_id;
      const recalled = m.body.type === 'recalled';
      let state = null;
      if (mine && !recalled) {
        const read = summary?.peer_read_seq !== undefined && summary.peer_read_seq >= seq;
        state = h('span', { class: 'state', 'data-state': read ? 'read' : 'sent' }, read ? 'Read' : 'Sent');
      }
      const actions = [];
      if (mine && !recalled && Date.now() - m.ts < RECALL_WINDOW_MS) {
        actions.push(h('button', { type: 'button', class: 'link recall', onclick: () => this.recall(seq) }, 'Recall'));
      }
      const keepable = !recalled && (m.body.type === 'image' || (m.body.type === 'sticker' && m.body.file_id));
      if (keepable) {
        actions.push(h('button', { type: 'button', class: 'link add-sticker', onclick: (e) => this.keepSticker(m.body.file_id, e.target) }, 'Add to stickers'));
      }
      if (mine && !recalled && conv.startsWith('g:')) {
        actions.push(h('button', { type: 'button', class: 'link receipts', onclick: (e) => this.receipts(seq, e.target) }, 'Receipts'));
      }
      items.push(h('li', { class: `msg${mine ? ' mine' : ''}${recalled ? ' recalled' : ''}`, 'data-seq': seq },
        mine ? null : h('span', { class: 'who' }, chat.nameOf(m.from)),
        recalled ? h('p', { class: 'text' }, m.body.by === chat.me.user_id ? 'You recalled a message' : `${chat.nameOf(m.body.by)} recalled a message`) : this.content(m),
        h('span', { class: 'meta' }, h('time', {}, clock(m.ts)), state, actions)));
    }
    for (const p of chat.pendingIn(conv)) {
      const failed = p.state === 'failed';
      items.push(h('li', { class: 'msg mine pending', 'data-client-msg-id': p.client_msg_id },
        h('p', { class: 'text' }, bodyText(p.body, (u) => chat.nameOf(u))),
        h('span', { class: 'meta' },
          h('span', { class: 'state', 'data-state': failed ? 'failed' : 'pending' }, failed ? `Not sent — ${p.error}` : 'Sending…'),
          failed ? h('button', { type: 'button', class: 'link', onclick: () => chat.retry(p.client_msg_id) }, 'Retry') : null,
          failed ? h('button', { type: 'button', class: 'link', onclick: () => chat.discard(p.client_msg_id) }, 'Delete') : null)));
    }
    mount(el, items);
    el.scrollTop = nearBottom ? el.scrollHeight : el.scrollHeight - fromBottom;
    this.stick = false;
    this.renderTyping();
  }

  async recall(seq) {
    try {
      await this.chat.recall(this.conv, seq);
    } catch (e) {
      this.messagesEl.after(h('p', { class: 'error', role: 'alert' }, e.message));
    }
  }

  async receipts(seq, button) {
    try {
      const r = await this.api.get(`/v1/conversations/${this.conv}/messages/${seq}/reads`);
      button.replaceWith(h('span', { class: 'receipts-count' }, `read by ${r.read}, unread ${r.unread}`));
    } catch (e) {
      button.textContent = e.message;
    }
  }
}

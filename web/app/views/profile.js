// The user's own profile: nickname, signature and avatar (an uploaded image, public once set).
import { h, mount } from '../dom.js';
import { upload } from '../files.js';

/** An avatar file's thumbnail URL (avatars are public: no token needed). */
export function avatarUrl(fileId) {
  return `/v1/files/${encodeURIComponent(fileId)}?thumb=true`;
}

export class ProfileDialog {
  constructor({ api, onChange }) {
    this.api = api;
    this.onChange = onChange;
  }

  async open() {
    const error = h('p', { class: 'error', role: 'alert' });
    let me;
    try {
      me = await this.api.get('/v1/me');
    } catch (e) {
      return this.onChange(null, e.message);
    }
    const preview = h('img', { class: 'avatar large', id: 'avatar-preview', alt: 'Your avatar', hidden: !me.avatar, src: me.avatar ? avatarUrl(me.avatar) : null });
    const nickname = h('input', { id: 'profile-nickname', maxlength: 64, value: me.nickname ?? '' });
    const signature = h('input', { id: 'profile-signature', maxlength: 256, value: me.signature ?? '' });
    const picker = h('input', { type: 'file', id: 'avatar-input', accept: 'image/jpeg,image/png,image/gif,image/webp',
      onchange: async () => {
        const file = picker.files[0];
        picker.value = '';
        if (!file) return;
        error.textContent = 'Uploading…';
        try {
          const info = await upload(this.api.token, file);
          if (!info.width) throw new Error('choose a JPEG, PNG, GIF or WebP image');
          me = await this.api.patch('/v1/me', { avatar: info.id });
          preview.src = avatarUrl(me.avatar);
          preview.hidden = false;
          error.textContent = '';
          this.onChange(me);
        } catch (e) {
          error.textContent = e.message;
        }
      } });
    const dialog = h('dialog', { id: 'profile', class: 'profile', onclose: () => dialog.remove() },
      h('form', { method: 'dialog', class: 'stack',
        onsubmit: async (e) => {
          e.preventDefault();
          try {
            me = await this.api.patch('/v1/me', { nickname: nickname.value.trim(), signature: signature.value.trim() });
            this.onChange(me);
            dialog.close();
          } catch (err) {
            error.textContent = err.message;
          }
        } },
      h('h2', {}, 'Your profile'),
      preview,
      h('label', { for: 'avatar-input' }, 'Avatar'), picker,
      h('label', { for: 'profile-nickname' }, 'Nickname'), nickname,
      h('label', { for: 'profile-signature' }, 'Signature'), signature,
      error,
      h('div', { class: 'row' },
        h('button', { type: 'submit', id: 'profile-save', class: 'primary' }, 'Save'),
        h('button', { type: 'button', id: 'profile-close', onclick: () => dialog.close() }, 'Close'))));
    document.body.append(dialog);
    dialog.showModal();
  }
}

/** The header's "me" button: avatar and name. */
export function meButton(session, onclick) {
  const img = h('img', { class: 'avatar', alt: '', hidden: true });
  const name = h('span', { class: 'me-name' }, session.username);
  const button = h('button', { type: 'button', class: 'me', id: 'me', 'aria-label': 'Your profile', onclick }, img, name);
  button.show = (me) => {
    if (!me) return;
    name.textContent = me.nickname || me.username;
    if (me.avatar) {
      img.src = avatarUrl(me.avatar);
      img.hidden = false;
    }
  };
  return button;
}

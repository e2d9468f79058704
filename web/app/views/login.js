// Log in or create an account. The password goes to the server and is forgotten: only the
// session token is stored.
import { h, mount } from '../dom.js';

export function renderLogin(root, { message, onSubmit }) {
  const error = h('p', { class: 'error', role: 'alert', id: 'login-error' }, message ?? '');
  const username = h('input', { id: 'login-username', name: 'username', autocomplete: 'username', required: true, minlength: 3, maxlength: 32, pattern: '[A-Za-z][A-Za-z0-9_]*' });
  const password = h('input', { id: 'login-password', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  let register = false;
  const form = h('form', {
    class: 'login', 'aria-labelledby': 'login-title',
    onsubmit: async (e) => {
      e.preventDefault();
      error.textContent = '';
      for (const b of form.querySelectorAll('button')) b.disabled = true;
      try {
        await onSubmit(username.value.trim(), password.value, register);
      } catch (err) {
        error.textContent = err.message;
        for (const b of form.querySelectorAll('button')) b.disabled = false;
      }
    },
  },
  h('h1', { id: 'login-title' }, 'tern'),
  h('label', { for: 'login-username' }, 'Username'), username,
  h('label', { for: 'login-password' }, 'Password'), password,
  error,
  h('div', { class: 'row' },
    h('button', { type: 'submit', id: 'login-submit', class: 'primary', onclick: () => { register = false; } }, 'Log in'),
    h('button', { type: 'submit', id: 'register-submit', onclick: () => { register = true; } }, 'Create account')));
  mount(root, form);
  username.focus();
}

// DOM building without HTML parsing. Every string becomes a text node or an attribute value, so
// user content (messages, names, pushes) can never turn into markup: there is no innerHTML in
// this client, and the server's Content-Security-Policy forbids inline script besides.

/**
 * h('button', {class: 'primary', onclick: f, 'aria-label': 'Send'}, 'Send', child, [more])
 * Attributes: `class`, `on<event>` handlers, booleans (true → present, false/null → absent),
 * everything else via setAttribute. Children: strings, numbers, nodes, arrays, null/false (skipped).
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2), value);
    } else if (name === 'value') {
      el.value = value;
    } else {
      el.setAttribute(name, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.append(child);
    else el.append(document.createTextNode(String(child)));
  }
}

/** Replaces an element's children. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/** "14:03" today, "Mon 14:03" this week, otherwise a date. */
export function clock(ts) {
  const d = new Date(Number(ts));
  const now = new Date();
  const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  if (d.toDateString() === now.toDateString()) return time;
  if (now - d < 6 * 864e5) return `${d.toLocaleDateString([], { weekday: 'short' })} ${time}`;
  return d.toLocaleDateString();
}

// JSON for the tern wire. Message and push ids are unsigned 64-bit integers larger than
// JavaScript's exact range (2^53), so they are read as decimal strings straight from the source
// text and written back as raw JSON numbers: an ACK names exactly the id the server sent.

const BIG_FIELDS = new Set(['msg_id']);

export function parse(text) {
  return JSON.parse(text, (key, value, context) => {
    if (typeof value === 'number' && BIG_FIELDS.has(key)) {
      return context?.source ?? String(value);
    }
    return value;
  });
}

export function stringify(frame) {
  return JSON.stringify(frame, (key, value) => {
    if (key === 'msg_ids') return value.map((id) => JSON.rawJSON(id));
    if (key === 'recent' && typeof value === 'string') return JSON.rawJSON(value); // a msg_id
    return value;
  });
}

// How message bodies and notices read as text (shared by the conversation list and the chat).

/** The built-in emoticons: stickers travel as these codes and each client draws them. */
export const EMOTICONS = {
  smile: '😄', laugh: '😂', wink: '😉', love: '😍', cool: '😎', wow: '😮', cry: '😢', angry: '😠',
  thumbs_up: '👍', clap: '👏', pray: '🙏', ok: '👌', heart: '❤️', fire: '🔥', party: '🎉', rocket: '🚀',
};
export function bodyText(body, nameOf) {
  switch (body.type) {
    case 'text': return body.text;
    case 'image': return '[image]';
    case 'file': return `[file ${body.name}, ${body.size} bytes]`;
    case 'sticker': return body.code ? `${EMOTICONS[body.code] ?? `:${body.code}:`}` : '[sticker]';
    case 'voice': return `[voice message, ${Math.round(body.duration_ms / 1000)} s]`;
    case 'location': return `[location${body.name ? ' ' + body.name : ''} ${body.latitude}, ${body.longitude}]`;
    case 'custom': return `[custom ${JSON.stringify(body.data)}]`;
    case 'recalled': return `${nameOf(body.by)} recalled a message`;
    case 'unreadable': return '[this message can no longer be read]';
    case 'notice': return noticeText(body.notice, nameOf);
    default: return `[${body.type}]`;
  }
}

export function noticeText(n, nameOf) {
  switch (n.kind) {
    case 'group_created': return `${nameOf(n.owner)} created the group “${n.name}”`;
    case 'member_joined': return n.by && n.by !== n.user ? `${nameOf(n.by)} added ${nameOf(n.user)}` : `${nameOf(n.user)} joined`;
    case 'member_left': return `${nameOf(n.user)} left`;
    case 'member_kicked': return `${nameOf(n.by)} removed ${nameOf(n.user)}`;
    case 'role_changed': return `${nameOf(n.user)} is now ${n.role}`;
    case 'owner_changed': return `${nameOf(n.to)} is the new owner`;
    case 'member_muted': return n.until ? `${nameOf(n.by)} muted ${nameOf(n.user)}` : `${nameOf(n.by)} unmuted ${nameOf(n.user)}`;
    case 'group_muted': return n.muted ? `${nameOf(n.by)} muted the group` : `${nameOf(n.by)} unmuted the group`;
    case 'recall': return `${nameOf(n.by)} recalled a message`;
    default: return n.kind.replaceAll('_', ' ');
  }
}

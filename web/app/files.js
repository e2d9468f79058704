// Files: tus 1.0 uploads (docs/PROTOCOL.md, "Files") that survive a dropped connection and a
// page reload, and downloads made with the login token (never put into a URL) as object URLs.
import { ApiError, failure } from './api.js';

const TUS = { 'tus-resumable': '1.0.0' };
const CHUNK = 1 << 20;
const RETRIES = 5;

function b64(s) {
  return btoa(String.fromCharCode(...new TextEncoder().encode(s)));
}

async function sha256(buf) {
  return btoa(String.fromCharCode(...new Uint8Array(await crypto.subtle.digest('SHA-256', buf))));
}

/** Where an unfinished upload of the same file was left, so a reload resumes it. */
function fingerprint(file) {
  return `tern.upload:${file.name}:${file.size}:${file.lastModified}`;
}

/**
 * Uploads a File; `progress(sent, total)` is called as bytes are confirmed. Resolves to the
 * server's `FileInfo`. A failed chunk is retried after asking the server where the upload
 * stands; an upload interrupted by a reload continues where it was.
 */
export async function upload(token, file, progress = () => {}) {
  const auth = { authorization: `Bearer ${token}` };
  const key = fingerprint(file);
  let path = localStorage.getItem(key);
  let offset = 0;
  if (path) {
    const r = await fetch(path, { method: 'HEAD', headers: { ...auth, ...TUS } }).catch(() => null);
    if (r?.ok) offset = Number(r.headers.get('upload-offset'));
    else path = null;
  }
  if (!path) {
    const r = await fetch('/v1/files/', {
      method: 'POST',
      headers: { ...auth, ...TUS, 'upload-length': String(file.size), 'upload-metadata': `filename ${b64(file.name)}` },
    });
    if (r.status !== 201) throw await failure(r);
    path = r.headers.get('location');
    localStorage.setItem(key, path);
  }
  progress(offset, file.size);
  let failures = 0;
  while (offset < file.size) {
    const chunk = await file.slice(offset, offset + CHUNK).arrayBuffer();
    let r;
    try {
      r = await fetch(path, {
        method: 'PATCH',
        headers: { ...auth, ...TUS, 'upload-offset': String(offset), 'content-type': 'application/offset+octet-stream',
          'upload-checksum': `sha256 ${await sha256(chunk)}` },
        body: chunk,
      });
    } catch {
      r = null;
    }
    if (r?.status === 204) {
      offset = Number(r.headers.get('upload-offset'));
      failures = 0;
      progress(offset, file.size);
      continue;
    }
    if (r && ![409, 423, 460, 503].includes(r.status)) {
      localStorage.removeItem(key);
      throw await failure(r);
    }
    if (++failures > RETRIES) throw new ApiError(0, 'network', 'the upload keeps failing; try again later');
    await new Promise((done) => setTimeout(done, 500 * failures));
    const head = await fetch(path, { method: 'HEAD', headers: { ...auth, ...TUS } }).catch(() => null);
    if (head?.ok) offset = Number(head.headers.get('upload-offset'));
  }
  localStorage.removeItem(key);
  const id = path.slice(path.lastIndexOf('/') + 1);
  const info = await fetch(`/v1/files/${id}/info`, { headers: auth });
  if (!info.ok) throw await failure(info);
  return info.json();
}

/** Object URLs of downloaded files and thumbnails, fetched once per page. */
export class Downloads {
  constructor(token) {
    this.token = token;
    this.urls = new Map();
  }

  /** An object URL for a file (or its thumbnail). */
  url(fileId, { thumb = false } = {}) {
    const key = `${fileId}${thumb ? '?thumb=true' : ''}`;
    if (!this.urls.has(key)) {
      const made = fetch(`/v1/files/${key}`, { headers: { authorization: `Bearer ${this.token}` } }).then(async (r) => {
        if (!r.ok) throw await failure(r);
        return URL.createObjectURL(await r.blob());
      });
      made.catch(() => this.urls.delete(key));
      this.urls.set(key, made);
    }
    return this.urls.get(key);
  }

  /** Saves a file under its name. */
  async save(fileId, name) {
    const a = document.createElement('a');
    a.href = await this.url(fileId);
    a.download = name;
    a.click();
  }
}

/** "1.4 MB". */
export function humanSize(n) {
  if (n < 1024) return `${n} B`;
  const units = ['KB', 'MB', 'GB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

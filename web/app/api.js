// The REST API (docs/PROTOCOL.md, section 8). Errors become ApiError with the server's stable
// code and sentence; a network failure is ApiError('network').
import { parse } from './wire.js';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export async function request(method, path, { body, token } = {}) {
  const headers = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(0, 'network', 'the server cannot be reached');
  }
  const text = await response.text();
  const data = text ? parse(text) : null;
  if (!response.ok) throw apiError(response, data);
  return data;
}

/** The error a failed response carries: the server's stable code and sentence when it sent one. */
export function apiError(response, data) {
  const error = data?.error ?? {};
  return new ApiError(response.status, error.code ?? 'http_' + response.status, error.message ?? response.statusText);
}

/** The error of a failed response whose body has not been read. */
export async function failure(response) {
  let data = null;
  try { data = parse(await response.text()); } catch { /* not JSON */ }
  return apiError(response, data);
}

/** Calls made as the logged-in user. */
export class Api {
  constructor(token, onUnauthorized) {
    this.token = token;
    this.onUnauthorized = onUnauthorized;
  }

  async call(method, path, body) {
    try {
      return await request(method, path, { body, token: this.token });
    } catch (e) {
      if (e.code === 'unauthorized') this.onUnauthorized();
      throw e;
    }
  }

  get(path) { return this.call('GET', path); }
  post(path, body) { return this.call('POST', path, body ?? {}); }
  put(path, body) { return this.call('PUT', path, body ?? {}); }
  patch(path, body) { return this.call('PATCH', path, body); }
  delete(path) { return this.call('DELETE', path); }
}

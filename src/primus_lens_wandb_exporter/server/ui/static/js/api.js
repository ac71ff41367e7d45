// Query API client: relative URLs (works behind a path prefix), bearer-token auth.
//
// When a call answers 401 the page asks for the token once (one dialog, however many
// requests are waiting), keeps it in sessionStorage for this tab and retries.  A 403
// `forbidden` means the token is known but its role may not read (an ingest token,
// docs/server.md "Access control"): the dialog says so, with the server's message, and
// asks for the read token instead.  Cancelling stops the asking until the page reloads.

const TOKEN_KEY = 'primus-lens-token';
const MAX_AUTH_TRIES = 5;

export class ApiError extends Error {
  constructor(status, message, body = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.body = body;
  }
}

let pendingTokenPrompt = null;
let tokenDeclined = null;   // the ApiError to answer with after the user cancelled the dialog

export function apiUrl(path, params = {}) {
  const url = new URL('api/v1/' + path.replace(/^\/+/, ''), document.baseURI);
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === null || value === '') continue;
    if (key === 'metrics') {
      // Exact names, as a JSON array: a metric name may hold "," or edge spaces (docs/protocol.md).
      url.searchParams.set(key, JSON.stringify(Array.isArray(value) ? value : [String(value)]));
      continue;
    }
    url.searchParams.set(key, Array.isArray(value) ? value.join(',') : String(value));
  }
  return url;
}

export function storedToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function askForToken(reason, declined) {
  if (tokenDeclined) return Promise.reject(tokenDeclined);
  if (pendingTokenPrompt) return pendingTokenPrompt;
  const dialog = document.getElementById('token-dialog');
  const form = document.getElementById('token-form');
  const input = document.getElementById('token-input');
  const cancel = document.getElementById('token-cancel');
  document.getElementById('token-reason').textContent = reason;
  pendingTokenPrompt = new Promise((resolve, reject) => {
    const done = (token) => {
      form.removeEventListener('submit', onSubmit);
      cancel.removeEventListener('click', onCancel);
      dialog.close();
      pendingTokenPrompt = null;
      if (token) {
        sessionStorage.setItem(TOKEN_KEY, token);
        resolve(token);
      } else {
        tokenDeclined = declined;
        reject(declined);
      }
    };
    const onSubmit = (event) => { event.preventDefault(); done(input.value.trim()); };
    const onCancel = () => done(null);
    form.addEventListener('submit', onSubmit);
    cancel.addEventListener('click', onCancel);
    input.value = '';
    dialog.showModal();
    input.focus();
  });
  return pendingTokenPrompt;
}

/** GET `api/v1/<path>` and return the parsed JSON; throws ApiError with a readable message. */
export async function apiGet(path, params = {}, { signal } = {}) {
  const url = apiUrl(path, params);
  for (let attempt = 0; attempt <= MAX_AUTH_TRIES; attempt++) {
    const sent = storedToken();
    const headers = { Accept: 'application/json' };
    if (sent) headers.Authorization = 'Bearer ' + sent;
    let response;
    try {
      response = await fetch(url, { headers, signal });
    } catch (err) {
      if (err.name === 'AbortError') throw err;
      throw new ApiError(0, 'Cannot reach the Lens server (' + err.message + '). Is `primus-lens serve` running?');
    }
    if (response.status === 401) {
      if (storedToken() !== sent) continue;          // another request already got a new token
      if (sent) sessionStorage.removeItem(TOKEN_KEY);
      await askForToken(sent ? 'That token was rejected by the server. Enter the read token (or the admin token) ' +
        'the server was started with.'
        : 'This Lens server requires a token: its read token (or the admin token). It is kept for this browser ' +
          'tab only (sessionStorage).',
      new ApiError(401, 'This Lens server needs an API token (the server was started with one). ' +
        'Reload the page to enter it.'));
      continue;
    }
    let body = null;
    try { body = await response.json(); } catch { /* not JSON */ }
    if (response.status === 403 && body && body.error === 'forbidden') {
      if (storedToken() !== sent) continue;
      const why = 'The token of this tab may not read from Lens (the server says: ' + body.message + ').';
      if (sent) sessionStorage.removeItem(TOKEN_KEY);
      await askForToken(why + ' Enter the read token (PRIMUS_LENS_READ_TOKEN) or the admin token.',
        new ApiError(403, why + ' Reload the page to enter the read token.', body));
      continue;
    }
    if (!response.ok) {
      const message = (body && (body.message || body.detail)) || `HTTP ${response.status} ${response.statusText}`;
      throw new ApiError(response.status, typeof message === 'string' ? message : JSON.stringify(message), body);
    }
    return body;
  }
  throw new ApiError(401, 'The server kept rejecting the token.');
}

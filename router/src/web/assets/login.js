// The login page: checks a token against the API (GET /v1/status with it) and keeps
// it in this tab's session storage, where the dashboard reads it. A token that the
// router refuses is never stored.
'use strict';

const TOKEN_KEY = 'wisp.token';
const form = document.getElementById('login-form');
const input = document.getElementById('token');
const error = document.getElementById('login-error');

function showError(text) {
  error.textContent = text;
  error.hidden = false;
}

const why = new URLSearchParams(location.search).get('why');
if (why === 'refused') {
  showError('The router refused the token (missing, wrong or revoked): log in again.');
}

form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const token = input.value.trim();
  if (!token) {
    showError('Enter a token.');
    return;
  }
  error.hidden = true;
  try {
    const r = await fetch('/v1/status', {
      headers: { Authorization: 'Bearer ' + token },
      cache: 'no-store',
    });
    if (r.status === 401 || r.status === 403) {
      showError('The router refused this token (HTTP ' + r.status + ').');
      return;
    }
    if (!r.ok) {
      showError('The router answered HTTP ' + r.status + ': ' + (await r.text()));
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    location.replace('/');
  } catch (e) {
    showError('Cannot reach the router: ' + e.message);
  }
});

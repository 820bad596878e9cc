import { html, nothing } from './html';
import { document } from './layout';

export interface LoginViewModel {
  csrf: string;
  next: string;
  error: string | null;
  disabledReason: string | null;
  readonlyEnabled: boolean;
  assetVersion: string;
}

export function loginPage(m: LoginViewModel): string {
  const body = html`<main class="login">
  <h1>FlexyFace admin</h1>
  ${m.disabledReason
    ? html`<p class="error">${m.disabledReason}</p>`
    : html`<form method="post" action="/admin/login" class="login-form" data-native>
    <input type="hidden" name="_csrf" value="${m.csrf}">
    <input type="hidden" name="next" value="${m.next}">
    ${m.error ? html`<p class="error" role="alert">${m.error}</p>` : nothing}
    <label>user <input name="user" autocomplete="username" required value="admin"></label>
    <label>password <input type="password" name="password" autocomplete="current-password" required autofocus></label>
    <button type="submit">Log in</button>
    <p class="hint">Users: <span class="mono">admin</span> (ADMIN_PASSWORD)${m.readonlyEnabled ? html`, <span class="mono">readonly</span> (ADMIN_READONLY_PASSWORD)` : nothing}.</p>
  </form>`}
</main>`;
  return document('Log in', m.assetVersion, body);
}

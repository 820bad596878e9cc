// FlexyFace admin: keeps the page's live region current (Server-Sent Events) and sends action forms
// with fetch, the CSRF token in a header. Plain script, no build step, nothing loaded from elsewhere.
(function () {
  'use strict';

  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var csrf = csrfMeta ? csrfMeta.getAttribute('content') : '';
  var region = document.querySelector('[data-live]');
  var flashBox = document.getElementById('flash');
  var flashTimer = null;

  function flash(message, kind) {
    if (!flashBox) return;
    flashBox.textContent = message;
    flashBox.className = 'flash ' + (kind || 'ok');
    clearTimeout(flashTimer);
    flashTimer = setTimeout(function () {
      flashBox.textContent = '';
      flashBox.className = '';
    }, 6000);
  }

  function withParam(name) {
    var url = new URL(window.location.href);
    url.searchParams.set(name, '1');
    return url.toString();
  }

  function swap(html) {
    region.innerHTML = html;
    region.setAttribute('data-updated-at', String(Date.now()));
  }

  // One immediate refresh after an action, so its effect shows before the next pushed update.
  function refreshNow() {
    if (!region) return Promise.resolve();
    return fetch(withParam('partial'), { credentials: 'same-origin', headers: { Accept: 'text/html' } })
      .then(function (res) {
        return res.ok ? res.text().then(swap) : undefined;
      })
      .catch(function () {});
  }

  if (region && window.EventSource) {
    var source = new EventSource(withParam('live'));
    source.addEventListener('region', function (e) {
      swap(e.data);
      document.body.removeAttribute('data-live-problem');
    });
    source.addEventListener('problem', function (e) {
      document.body.setAttribute('data-live-problem', '1');
      flash('Live update failed: ' + e.data, 'error');
    });
    source.onerror = function () {
      // A refused stream (session ended) closes for good: reloading leads to the login page.
      if (source.readyState === EventSource.CLOSED) setTimeout(function () { window.location.reload(); }, 2000);
    };
  }

  document.addEventListener('submit', function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || form.method.toLowerCase() !== 'post' || form.hasAttribute('data-native')) return;
    event.preventDefault();
    var question = form.getAttribute('data-confirm');
    if (question && !window.confirm(question)) return;
    var buttons = form.querySelectorAll('button');
    buttons.forEach(function (b) { b.disabled = true; });
    fetch(form.action, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'X-CSRF-Token': csrf, Accept: 'application/json' },
      body: new URLSearchParams(new FormData(form)),
    })
      .then(function (res) {
        return res.json().catch(function () { return {}; }).then(function (body) {
          if (!res.ok) {
            var message = Array.isArray(body.message) ? body.message.join('; ') : body.message;
            flash((message || res.statusText) + ' (' + res.status + ')', 'error');
            return;
          }
          if (body.redirect) {
            window.location.assign(body.redirect);
            return;
          }
          flash(body.message || 'Done', 'ok');
          return refreshNow();
        });
      })
      .catch(function (err) {
        flash('Request failed: ' + err.message, 'error');
      })
      .then(function () {
        buttons.forEach(function (b) { if (document.contains(b)) b.disabled = false; });
      });
  });
})();

// Passkey ceremonies for the forms rendered by passkey-form.eta, with @simplewebauthn/browser
// (/static/webauthn.js). The pages work without this script: it only reveals the passkey forms.
'use strict';
(() => {
  const { browserSupportsWebAuthn, browserSupportsWebAuthnAutofill, startAuthentication, startRegistration } = window.SimpleWebAuthnBrowser;
  if (!browserSupportsWebAuthn()) return;
  const NOT_USED = 'The passkey was not used. Try again, or use another way below.';

  for (const form of document.querySelectorAll('form[data-passkey]')) {
    const options = JSON.parse(form.dataset.options);
    const kind = form.dataset.passkey;
    const error = form.querySelector('.passkey-error');
    const send = (response) => {
      form.elements.response.value = JSON.stringify(response);
      form.submit();
    };
    const fail = (err) => {
      if (err && err.name === 'AbortError') return;
      error.textContent = NOT_USED;
      error.hidden = false;
    };
    form.hidden = false;
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      error.hidden = true;
      const ceremony = kind === 'register' ? startRegistration({ optionsJSON: options }) : startAuthentication({ optionsJSON: options });
      ceremony.then(send, fail);
    });
    // Passkey autofill (conditional UI): the email field offers this site's passkeys.
    if (form.dataset.autofill === 'on') {
      browserSupportsWebAuthnAutofill().then((yes) => {
        if (yes) startAuthentication({ optionsJSON: options, useBrowserAutofill: true }).then(send, () => {});
      });
    }
  }
})();

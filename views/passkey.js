// Passkey ceremonies for the forms rendered by passkey-form.eta, with @simplewebauthn/browser
// (/static/webauthn.js). The pages work without this script: it only reveals the passkey forms.
'use strict';
(() => {
  const { browserSupportsWebAuthn, browserSupportsWebAuthnAutofill, startAuthentication, startRegistration } = window.SimpleWebAuthnBrowser;
  if (!browserSupportsWebAuthn()) return;

  // The server no longer knows the passkey just used: tell the device to forget it (WebAuthn Signal API,
  // where the browser has it), so it stops being offered here.
  for (const form of document.querySelectorAll('form[data-unknown-credential]')) {
    const { rpId } = JSON.parse(form.dataset.options);
    const { PublicKeyCredential } = window;
    if (typeof PublicKeyCredential.signalUnknownCredential === 'function') {
      PublicKeyCredential.signalUnknownCredential({ rpId, credentialId: form.dataset.unknownCredential }).catch(() => {});
    }
  }
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
    if (form.dataset.autofill === 'on' && !form.dataset.unknownCredential) {
      browserSupportsWebAuthnAutofill().then((yes) => {
        if (yes) startAuthentication({ optionsJSON: options, useBrowserAutofill: true }).then(send, () => {});
      });
    }
  }

  // The enrolment page: a passkey is the one primary way where the browser can make one; the app folds away.
  if (document.querySelector('form[data-passkey="register"]')) {
    for (const details of document.querySelectorAll('details[data-fold-if-passkeys]')) details.open = false;
  }

  // The account page's proof: a passkey instead of password and code, in the form that needs it.
  for (const button of document.querySelectorAll('button[data-passkey-proof]')) {
    const form = button.form;
    const options = JSON.parse(button.dataset.options);
    const error = form.querySelector('.passkey-error');
    const proofFields = form.querySelectorAll('[data-proof]');
    const needProofFields = (yes) => proofFields.forEach((field) => (field.required = yes));
    button.hidden = false;
    button.addEventListener('click', () => {
      error.hidden = true;
      // The form's other fields (a new password, a name) are still checked; the password and code are not needed.
      needProofFields(false);
      if (!form.reportValidity()) return needProofFields(true);
      startAuthentication({ optionsJSON: options }).then(
        (response) => {
          form.elements.passkey_response.value = JSON.stringify(response);
          form.submit();
        },
        (err) => {
          needProofFields(true);
          if (err && err.name === 'AbortError') return;
          error.textContent = 'The passkey was not used. Try again, or use your password and code.';
          error.hidden = false;
        },
      );
    });
  }
})();

// The account page's one script: keeps the person's device in step with this server through the
// WebAuthn Signal API, where the browser has it. The page works the same without it.
'use strict';
(() => {
  const holder = document.getElementById('passkey-signals');
  const credential = window.PublicKeyCredential;
  if (!holder || !credential) return;
  const { rpId, userId, credentialIds, name, displayName } = JSON.parse(holder.dataset.signals);
  // Passkeys removed here (or by an administrator) stop being offered by the device.
  if (typeof credential.signalAllAcceptedCredentials === 'function') {
    credential.signalAllAcceptedCredentials({ rpId, userId, allAcceptedCredentialIds: credentialIds }).catch(() => {});
  }
  // The device shows the current address and name under this site's passkeys.
  if (typeof credential.signalCurrentUserDetails === 'function') {
    credential.signalCurrentUserDetails({ rpId, userId, name, displayName }).catch(() => {});
  }
})();

/* global navigator */
// Copy and print for the recovery codes page: shown only where scripts run (the download link needs none).
'use strict';
(() => {
  const list = document.getElementById('recovery-codes');
  if (!list) return;
  const text = () => [...list.querySelectorAll('code')].map((c) => c.textContent.trim()).join('\n');
  const copy = document.querySelector('button[data-copy-codes]');
  if (copy && navigator.clipboard) {
    copy.hidden = false;
    copy.addEventListener('click', async () => {
      try {
        await navigator.clipboard.writeText(text());
        copy.textContent = 'Copied';
      } catch {
        copy.textContent = 'Copy them by hand: select the codes';
      }
    });
  }
  const print = document.querySelector('button[data-print-codes]');
  if (print) {
    print.hidden = false;
    print.addEventListener('click', () => window.print());
  }
})();

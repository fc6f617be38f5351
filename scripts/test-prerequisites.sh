#!/usr/bin/env bash
# What `npm test` needs from the machine besides node_modules: redis-server and redis-cli (the tests start
# their own Redis on free ports), Debian's /usr/bin/chromium (driven by playwright-core, which downloads no
# browser), and docker-compose (validates docker-compose.yml; no Docker engine is needed). Run by npm before
# the tests: it installs what is missing from Debian's packages when it can (root, or passwordless sudo, with
# apt-get), and otherwise names the packages and stops.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
[ ${#missing[@]} -eq 0 ] && exit 0

if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then sudo=(); elif sudo -n true >/dev/null 2>&1; then sudo=(sudo -n); else sudo=(none); fi
  if [ "${sudo[0]:-}" != none ]; then
    echo "npm test: installing the Debian packages the tests need: ${missing[*]}" >&2
    log="$(mktemp)"
    if "${sudo[@]}" apt-get update -qq >"$log" 2>&1 &&
      DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$log" 2>&1; then
      rm -f "$log"
      exit 0
    fi
    cat "$log" >&2
    echo "npm test: installing ${missing[*]} failed (apt-get's output above)" >&2
    exit 1
  fi
fi
echo "npm test needs these packages, which are missing: ${missing[*]}" >&2
echo "  on Debian or Ubuntu: sudo apt-get install --no-install-recommends ${missing[*]}" >&2
exit 1

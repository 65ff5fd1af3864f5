#!/usr/bin/env bash
# `make test` runs the browser tests, which drive Debian's Chromium: install it when it is
# missing (as root, through install-system-deps.sh), or refuse with the command that does.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
[[ -x /usr/bin/chromium ]] && exit 0
if (( EUID == 0 )); then
  echo "make test: Chromium is missing for the browser tests; installing the system packages"
  exec ./install-system-deps.sh
fi
cat >&2 <<'MSG'
make test: the browser tests need Chromium (/usr/bin/chromium), which is missing.
Install it with:   sudo deploy/local/install-system-deps.sh
or run the tests without the browser tier:   make test-fast
MSG
exit 1

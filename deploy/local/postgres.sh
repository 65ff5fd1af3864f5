#!/usr/bin/env bash
# Local throwaway PostgreSQL server for Leadwire.
# Usage: deploy/local/postgres.sh start|stop|status|wait [--state DIR]   (see infra.py)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
py="$root/.venv/bin/python"
[[ -x "$py" ]] || py=python3  # infra.py is stdlib-only, so any Python 3.11+ works
exec "$py" "$root/deploy/local/infra.py" postgres "$@"

#!/usr/bin/env bash
# Installs the system packages the full test suite needs on Debian 12, only those missing:
# a JDK >= 17 and Maven (real Kafka broker from Apache jars), the PostgreSQL server,
# Chromium + chromedriver (browser tests), wrk (benchmarks), and python3-venv. Idempotent: with everything
# present it touches nothing, so it is cheap to run first in every CI job.
set -euo pipefail

missing=()

java_major() {
  # `java -version` prints e.g. `openjdk version "17.0.15"` (or "1.8.0_x" for Java 8).
  local v
  v="$(java -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')"
  [[ "$v" == 1.* ]] && v="${v#1.}"
  echo "${v%%.*}"
}

if ! command -v java >/dev/null || (( $(java_major || echo 0) < 17 )); then
  missing+=(default-jdk-headless)
fi
command -v mvn >/dev/null || missing+=(maven)
# Debian keeps initdb out of PATH, under /usr/lib/postgresql/<major>/bin.
if ! command -v initdb >/dev/null && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  missing+=(postgresql)
fi
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
# wrk drives the ingest benchmark's saturation phase (bench/ingest_bench.py).
command -v wrk >/dev/null || missing+=(wrk)
# Debian's python3 lacks ensurepip (so `python3 -m venv` fails) until python3-venv is installed.
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)

if (( ${#missing[@]} == 0 )); then
  echo "install-system-deps: java, mvn, postgresql, chromium, chromedriver, wrk, venv all present; nothing to do"
  exit 0
fi

echo "install-system-deps: missing packages: ${missing[*]}"
if (( EUID != 0 )); then
  echo "install-system-deps: run as root (e.g. sudo $0) to install them" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get -q update
apt-get -q install -y --no-install-recommends "${missing[@]}"
echo "install-system-deps: installed ${missing[*]}"

#!/usr/bin/env bash
# Install what the integration and browser tests run (PostgreSQL, Redis, the Debian chromium
# browser for Playwright, poppler-utils' pdftotext/pdftoppm and the DejaVu fonts for budget
# statements) when it is missing. Idempotent: does nothing when all are there. It never starts system services;
# the tests start their own throwaway instances on free ports (tests/integration/servers.py).
set -euo pipefail

have_postgres() {
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null
}

have_redis() {
  command -v redis-server >/dev/null 2>&1
}

have_chromium() {
  command -v chromium >/dev/null 2>&1
}

have_poppler() {
  command -v pdftoppm >/dev/null 2>&1 && command -v pdftotext >/dev/null 2>&1
}

have_fonts() {
  [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] && [ -f /usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf ]
}

have_all() {
  have_postgres && have_redis && have_chromium && have_poppler && have_fonts
}

if have_all; then
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "system-packages.sh: postgresql, redis-server, chromium, poppler-utils or fonts-dejavu-core is missing and apt-get is not available" >&2
  exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
else
  as_root=(sudo)
fi

# Keep package scripts from starting the system postgresql/redis services (the Debian
# policy-rc.d convention); only when no policy is already in place, removed afterwards.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
  "${as_root[@]}" chmod 755 "$policy"
  trap '"${as_root[@]}" rm -f "$policy"' EXIT
fi

echo "system-packages.sh: installing postgresql, redis-server, chromium, poppler-utils and fonts-dejavu-core"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  postgresql redis-server chromium poppler-utils fonts-dejavu-core >/dev/null

if ! have_all; then
  echo "system-packages.sh: postgresql, redis-server, chromium, poppler-utils or fonts-dejavu-core still missing after apt-get install" >&2
  exit 1
fi

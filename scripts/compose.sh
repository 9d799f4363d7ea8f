#!/usr/bin/env bash
# Runs Docker Compose, whichever this machine has: the `docker compose`
# plugin (v2) or the standalone `docker-compose` (v1, 1.29 or later, as
# Debian ships it; there `docker compose up -d` fails with "unknown
# shorthand flag: 'd'").
#
#   scripts/compose.sh up -d
#   scripts/compose.sh -f docker-compose.yml -f docker-compose.node4.yml up -d node4
set -euo pipefail
cd "$(dirname "$0")/.."
if docker compose version >/dev/null 2>&1; then
  exec docker compose "$@"
elif command -v docker-compose >/dev/null 2>&1; then
  exec docker-compose "$@"
else
  echo "neither 'docker compose' nor 'docker-compose' is installed" >&2
  exit 1
fi

#!/usr/bin/env bash
# Runs the chaos workload and checker (discovery-chaos) against the compose
# cluster, which must be up: scripts/docker-image.sh && docker compose up -d.
#
#   scripts/chaos.sh                       # 16 rounds, every fault in turn
#   scripts/chaos.sh --rounds 2 --faults kill-leader,partition-leader
#   scripts/chaos.sh --help                # every option
#
# Faults that enter a container's network namespace or throttle its disk
# (cut-off-follower, lossy-net-leader, slow-disk-leader) need root; run as
# a user they are skipped and say so. Exits non-zero on any violation.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet --bin discovery-chaos
exec "${CARGO_TARGET_DIR:-target}/release/discovery-chaos" "$@"

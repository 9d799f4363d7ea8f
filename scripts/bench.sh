#!/usr/bin/env bash
# Runs every benchmark of discovery-bench, and loads nginx serving the very
# bytes of a discovery fetch as a static file with the same client, so the
# fetch figure has a reference point on the same machine.
#
# Runs as root (it may install nginx). Sizes can be shrunk for a quick run:
#   DURATION=2 WARMUP=1 POLLS=1000 INSTANCES=10000 scripts/bench.sh
#
# With CLUSTER=1 it then compares three-node clusters with peer TLS on and
# off (register throughput and latency, leader-kill failover), in turns
# within one run. BEFORE=<discovery binary of an older build> adds that
# build, configured with the one-port config of the builds before the peer
# port (commit 4d43a41 and older), to the register comparison, e.g.
#   git worktree add /tmp/prev 4d43a41
#   (cd /tmp/prev && CARGO_TARGET_DIR=/tmp/prev-target cargo build --release --bin discovery)
#   CLUSTER=1 BEFORE=/tmp/prev-target/release/discovery scripts/bench.sh
set -euo pipefail

cd "$(dirname "$0")/.."

CONNS=${CONNS:-64}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
POLLS=${POLLS:-10000}
INSTANCES=${INSTANCES:-100000}
NGINX_PORT=${NGINX_PORT:-8089}
CLUSTER=${CLUSTER:-0}
BEFORE=${BEFORE:-}
ROUNDS=${ROUNDS:-6}
RUNS=${RUNS:-10}

bench=target/release/discovery-bench
load=(--conns "$CONNS" --duration "$DURATION" --warmup "$WARMUP")

work=$(mktemp -d)
nginx_conf=$work/nginx.conf
nginx_pid=$work/nginx.pid

cleanup() {
    if [[ -s $nginx_pid ]]; then
        kill "$(cat "$nginx_pid")" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

if ! command -v nginx >/dev/null; then
    echo "# installing nginx" >&2
    apt-get update -qq
    apt-get install -y -qq nginx-light || apt-get install -y -qq nginx
fi

if [[ -n $BEFORE && ! -x $BEFORE ]]; then
    echo "BEFORE=$BEFORE is not an executable" >&2
    exit 1
fi

cargo build --release

# nginx workers run as an unprivileged user: let them read the body.
mkdir -p "$work/www" "$work/temp"
chmod 755 "$work" "$work/www"

fetch_line=$("$bench" fetch "${load[@]}" --save-body "$work/www/body.json")
echo "$fetch_line"
chmod 644 "$work/www/body.json"

if (exec 3<>"/dev/tcp/127.0.0.1/$NGINX_PORT") 2>/dev/null; then
    echo "port $NGINX_PORT is already in use" >&2
    exit 1
fi

# A configuration of our own: the system's nginx setup is left untouched.
# open_file_cache spares nginx an open/fstat/close per request, as any
# production static-file setup would, so the reference is not handicapped.
cat >"$nginx_conf" <<EOF
worker_processes auto;
daemon on;
pid $nginx_pid;
error_log $work/error.log warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    open_file_cache max=16 inactive=60s;
    open_file_cache_valid 60s;
    keepalive_requests 1000000;
    keepalive_timeout 65s;
    client_body_temp_path $work/temp/body;
    proxy_temp_path $work/temp/proxy;
    fastcgi_temp_path $work/temp/fastcgi;
    uwsgi_temp_path $work/temp/uwsgi;
    scgi_temp_path $work/temp/scgi;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location = /body.json {
            root $work/www;
            default_type application/json;
        }
    }
}
EOF
nginx -e "$work/error.log" -p "$work" -c "$nginx_conf"
for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$NGINX_PORT") 2>/dev/null && break
    sleep 0.1
done

nginx_line=$("$bench" fetch "${load[@]}" --label nginx --url "http://127.0.0.1:$NGINX_PORT/body.json")
echo "$nginx_line"
kill "$(cat "$nginx_pid")"
rm -f "$nginx_pid"

# The second field of a result line is its rate.
awk -v d="$(awk '{print $2}' <<<"$fetch_line")" -v n="$(awk '{print $2}' <<<"$nginx_line")" \
    'BEGIN { printf "fetch/nginx: %s (discovery %d req/s, nginx %d req/s)\n", (n > 0 ? sprintf("%.2f", d / n) : "n/a"), d, n }'

"$bench" polls --count "$POLLS"
"$bench" register "${load[@]}"
"$bench" memory --instances "$INSTANCES"

if [[ $CLUSTER == 1 ]]; then
    variants=tls,plain
    before=()
    if [[ -n $BEFORE ]]; then
        variants=tls,plain,before
        before=(--before "$BEFORE")
    fi
    "$bench" compare-register "${load[@]}" --rounds "$ROUNDS" --variants "$variants" "${before[@]}"
    "$bench" compare-failover --runs "$RUNS" --rounds 2
fi

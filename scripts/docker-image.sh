#!/usr/bin/env bash
# Builds the raft-discovery image without pulling anything: the release
# binaries built here with cargo, the shared libraries they load, and an
# nsswitch.conf, copied into a FROM-scratch image.
#
#   scripts/docker-image.sh            # builds raft-discovery:latest
#   DISCOVERY_IMAGE=name:tag scripts/docker-image.sh
#
# Why not a static binary: the musl target is not on every machine that has
# cargo, and a static glibc binary cannot load the NSS modules its resolver
# needs to find peers by name. A normal (dynamic) binary plus exactly the
# libraries `ldd` lists keeps glibc's resolver, which reads the
# /etc/resolv.conf and /etc/hosts Docker gives every container, so peer
# names resolve through Docker's DNS.
set -euo pipefail
cd "$(dirname "$0")/.."

image=${DISCOVERY_IMAGE:-raft-discovery:latest}
bins=(discovery discoveryctl)

command -v cargo >/dev/null || { echo "cargo is required" >&2; exit 1; }
command -v docker >/dev/null || { echo "docker is required" >&2; exit 1; }

cargo build --release --locked $(printf -- '--bin %s ' "${bins[@]}")
target=${CARGO_TARGET_DIR:-target}/release

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/rootfs
mkdir -p "$root/bin" "$root/etc" "$stage/data" "$stage/certs" "$stage/ca" "$stage/zone-cas" "$stage/workdir"

# Copies a file (following links) to the same path inside the image.
place() {
  mkdir -p "$root$(dirname "$1")"
  cp -L "$1" "$root$1"
}

for b in "${bins[@]}"; do
  cp "$target/$b" "$root/bin/$b"
  strip "$root/bin/$b" 2>/dev/null || true
  # Every library the binary loads, and the loader itself, at their paths.
  for lib in $(ldd "$target/$b" | grep -o '/[^ ]*'); do
    [ -e "$root$lib" ] || place "$lib"
  done
done
# glibc before 2.34 keeps the `files` and `dns` lookups in modules it loads
# at run time, which ldd does not list; newer glibc has them built in.
for mod in libnss_files.so.2 libnss_dns.so.2 libresolv.so.2; do
  # awk reads the whole listing (no early exit): under pipefail, ldconfig
  # killed by SIGPIPE mid-listing would fail the script.
  lib=$(ldconfig -p 2>/dev/null | awk -v m="$mod" '$1 == m && /x86-64|x86_64|aarch64/ && !f { f = $NF } END { if (f) print f }')
  [ -n "$lib" ] && [ ! -e "$root$lib" ] && place "$lib"
done
printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"
# The user the node runs as, by name too: `docker cp -a` (restoring a
# backup with its ownership) looks it up.
printf 'nobody:x:65534:65534:nobody:/data:/sbin/nologin\n' > "$root/etc/passwd"
printf 'nogroup:x:65534:\n' > "$root/etc/group"

cat > "$stage/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
# The directories the node and `discoveryctl certs cluster` write belong to
# the unprivileged user they run as; a fresh named volume mounted on one
# starts with this ownership. /data: the Raft log and snapshots. /certs:
# the CA certificate and each node's certificate and key (nodes mount it
# read-only). /ca: the CA and its key, mounted only by the one-shot
# certificate services of docker-compose.yml, never by a node. /zone-cas: each
# zone's CA certificate, which the other zones trust for its link
# (docker-compose.zones.yml).
COPY --chown=65534:65534 data/ /data/
COPY --chown=65534:65534 certs/ /certs/
COPY --chown=65534:65534 ca/ /ca/
COPY --chown=65534:65534 zone-cas/ /zone-cas/
# The working directory of the Kubernetes manifests (deploy/kubernetes):
# config/, tls/ and data/ are mounted under it.
COPY --chown=65534:65534 workdir/ /var/lib/discovery/
USER nobody
VOLUME /data
# 7171: clients (discovery API, /admin). 7271: peers (Raft, forwarded
# writes; mutual TLS). Publish only 7171; peers reach 7271 on a private
# network.
EXPOSE 7171 7271
ENV RUST_LOG=info,openraft=warn,sled=warn NO_COLOR=1
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/bin/discoveryctl", "--node", "127.0.0.1:7171", "health"]
ENTRYPOINT ["/bin/discovery"]
# A lone container is a one-node cluster: it has no peers to authenticate,
# so it starts without certificates (and warns), and, as configs/single.toml
# does, keeps that plain peer listener on its own loopback, out of reach of
# other containers. A cluster gets mutual TLS between its peers from the
# compose setup (docker-compose.yml), whose config files replace this
# command.
CMD ["--listen", "0.0.0.0:7171", "--peer-listen", "127.0.0.1:7271", "--data-dir", "/data", "--insecure-peers"]
DOCKERFILE

docker build --quiet --tag "$image" "$stage" >/dev/null
# The image must run on its own: the loader and every library are inside.
docker run --rm --entrypoint /bin/discoveryctl "$image" --version >/dev/null
docker run --rm "$image" --version >/dev/null
# And make certificates (ring, the clock, writing as nobody).
docker run --rm --network none --entrypoint /bin/discoveryctl "$image" \
  certs cluster --dir /certs --ca-dir /ca --node check:1=check >/dev/null

size=$(docker image inspect --format '{{.Size}}' "$image")
echo "built $image: $((size / 1024 / 1024)) MiB ($size bytes)"

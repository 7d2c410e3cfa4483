#!/usr/bin/env bash
# Install and configure Podman (Debian 12 packages), make a local base image
# with debootstrap (no registry is reachable here) and build the hpcorch image
# on top of it (containers/build.sh). Idempotent: when everything is in place
# and the image is up to date with the source tree it only checks (~1 s).
#
# Podman works here as root only with these settings (../shared notes), written
# to /etc/containers/{containers,storage}.conf so no per-command flags are
# needed: runtime runc (crun fails on hybrid cgroups), ulimits nofile=1024:1024
# and nproc=4096:4096 (the defaults exceed the hard limits), cgroup_manager
# cgroupfs, events_logger file, storage driver overlay.
#
# Environment:
#   HPCORCH_BASE_IMAGE   local base image name        (default localhost/hpcorch-base:bookworm)
#   HPCORCH_IMAGE        project image name           (default localhost/hpcorch:latest)
#   HPCORCH_DEBIAN_MIRROR  mirror for debootstrap     (default: the one apt uses)
#   HPCORCH_PYTHON       host interpreter with hpcorch (default: .venv/bin/python)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
BASE=${HPCORCH_BASE_IMAGE:-localhost/hpcorch-base:bookworm}
IMAGE=${HPCORCH_IMAGE:-localhost/hpcorch:latest}
PKGS=(podman runc catatonit debootstrap)
CONF_DIR=/etc/containers
MARKER="# Written by hpcorch scripts/podman-up.sh"
T0=$(date +%s.%N)

log() { printf 'podman-up: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

[ "$(id -u)" -eq 0 ] || die "run as root (Podman is configured for root here)"

# ------------------------------------------------------------------ packages
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing[@]}" \
        >/tmp/hpcorch-podman-apt.log 2>&1 || {
        apt-get -o DPkg::Lock::Timeout=300 update -q >>/tmp/hpcorch-podman-apt.log 2>&1
        apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing[@]}" \
            >>/tmp/hpcorch-podman-apt.log 2>&1 || die "apt-get failed: see /tmp/hpcorch-podman-apt.log"
    }
    log "installed ${missing[*]} ($(elapsed) s so far)"
fi

# ------------------------------------------------------------- configuration
# write_conf FILE CONTENT: write when absent or ours and different; refuse a foreign file.
write_conf() {
    local file=$1 content=$2
    if [ -e "$file" ] && ! head -n 1 "$file" | grep -qxF "$MARKER"; then
        die "$file exists and was not written by this script; merge these settings into it:
$content"
    fi
    if [ ! -e "$file" ] || [ "$(cat "$file")" != "$content" ]; then
        mkdir -p "$(dirname "$file")"
        printf '%s\n' "$content" >"$file.tmp" && mv "$file.tmp" "$file"
        log "wrote $file"
    fi
}
write_conf "$CONF_DIR/containers.conf" "$MARKER
[containers]
default_ulimits = [\"nofile=1024:1024\", \"nproc=4096:4096\"]
init_path = \"/usr/libexec/podman/catatonit\"

[engine]
runtime = \"runc\"
cgroup_manager = \"cgroupfs\"
events_logger = \"file\""
write_conf "$CONF_DIR/storage.conf" "$MARKER
[storage]
driver = \"overlay\"
runroot = \"/run/containers/storage\"
graphroot = \"/var/lib/containers/storage\""

# ------------------------------------------------------------------ base image
# The Debian mirror apt uses (deb822 .sources first, then one-line .list files).
debian_mirror() {
    local f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        uri=$(awk '/^URIs:/ {u=$2} /^Suites:/ && / '"$1"'( |$)/ {s=1}
                   /^$/ {if (s && u && !done) {print u; done=1} u=""; s=0}
                   END {if (s && u && !done) print u}' "$f")
        [ -n "$uri" ] && { printf '%s\n' "$uri"; return; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        uri=$(awk '$1 == "deb" && $3 == "'"$1"'" {print $2; exit}' "$f")
        [ -n "$uri" ] && { printf '%s\n' "$uri"; return; }
    done
    printf '%s\n' http://deb.debian.org/debian
}

if ! podman image exists "$BASE"; then
    # shellcheck source=/dev/null
    suite=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-bookworm}")
    mirror=${HPCORCH_DEBIAN_MIRROR:-$(debian_mirror "$suite")}
    rootfs=$(mktemp -d /var/tmp/hpcorch-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    log "debootstrap $suite from $mirror (a minimal Debian with Python 3)"
    mkdir -p /var/cache/hpcorch/debootstrap
    debootstrap --variant=minbase --include=python3-minimal,libpython3-stdlib \
        --cache-dir=/var/cache/hpcorch/debootstrap "$suite" "$rootfs" "$mirror" \
        >/tmp/hpcorch-debootstrap.log 2>&1 || die "debootstrap failed: see /tmp/hpcorch-debootstrap.log"
    rm -rf "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
        "$rootfs"/usr/share/locale/* "$rootfs"/var/cache/apt/archives/*.deb \
        "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
    tar -C "$rootfs" -c . | podman import --quiet \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        - "$BASE" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
    log "base image $BASE made ($(elapsed) s so far)"
fi

# --------------------------------------------------------------- project image
PY=${HPCORCH_PYTHON:-$root/.venv/bin/python}
[ -x "$PY" ] || PY=python3
HPCORCH_PYTHON=$PY "$root/containers/build.sh" --runtime podman --base "$BASE" --tag "$IMAGE"
log "ready: podman $(podman --version | awk '{print $3}'), image $IMAGE ($(elapsed) s)"

#!/usr/bin/env bash
# Build the one hpcorch image from containers/Dockerfile with podman or docker
# and, where `apptainer` exists, convert that same image to a SIF file.
#
#   containers/build.sh [--runtime podman|docker] [--base IMAGE] [--tag NAME]
#                       [--sif PATH] [--force]
#   containers/build.sh --def      # regenerate containers/hpcorch.def (spython)
#
# The build needs no network: `python -m hpcorch.containers.buildctx` first
# collects wheels of every dependency, pinned to the host venv's versions, and
# a wheel of this source tree into containers/build/context (cached). The
# image is rebuilt only when that context, the Dockerfile or the base changed
# (labels org.hpcorch.context / org.hpcorch.base); --force rebuilds anyway.
#
# Environment: HPCORCH_PYTHON (host interpreter with hpcorch installed;
# default .venv/bin/python), BASE_IMAGE (default: the Dockerfile's public one).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
PY=${HPCORCH_PYTHON:-$root/.venv/bin/python}
[ -x "$PY" ] || PY=python3
runtime=""
base=${BASE_IMAGE:-}
tag=localhost/hpcorch:latest
sif=""
force=0

log() { printf 'build: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

while [ $# -gt 0 ]; do
    case $1 in
        --runtime) runtime=$2; shift 2 ;;
        --base) base=$2; shift 2 ;;
        --tag) tag=$2; shift 2 ;;
        --sif) sif=$2; shift 2 ;;
        --force) force=1; shift ;;
        --def)
            "$PY" -c 'from spython.client import main; main()' \
                recipe "$here/Dockerfile" "$here/hpcorch.def.tmp" >/dev/null 2>&1 ||
                die "spython failed (pip install spython, or pip install -e '.[test]')"
            mv "$here/hpcorch.def.tmp" "$here/hpcorch.def"
            log "wrote $here/hpcorch.def"
            exit 0 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

if [ -z "$runtime" ]; then
    if command -v podman >/dev/null; then runtime=podman
    elif command -v docker >/dev/null; then runtime=docker
    else die "neither podman nor docker found (scripts/podman-up.sh installs podman)"; fi
fi
command -v "$runtime" >/dev/null || die "$runtime not found on PATH"

base_args=()
base_id=public
if [ -n "$base" ]; then
    base_args=(--build-arg "BASE_IMAGE=$base")
    base_id=$("$runtime" image inspect --format '{{.Id}}' "$base" 2>/dev/null) ||
        die "base image $base not found locally (scripts/podman-up.sh makes one with debootstrap)"
fi

ctx=$here/build/context
hash=$("$PY" -m hpcorch.containers.buildctx "$ctx" --root "$root")
current=$("$runtime" image inspect --format \
    '{{index .Labels "org.hpcorch.context"}} {{index .Labels "org.hpcorch.base"}}' "$tag" 2>/dev/null || true)
rebuilt=0
if [ "$force" -eq 0 ] && [ "$current" = "$hash $base_id" ]; then
    log "$tag is up to date (context ${hash:0:12})"
else
    log "building $tag with $runtime (context ${hash:0:12})"
    if [ -n "$base" ]; then
        # The wheels are for the host's Python: the base must have the same minor version.
        want=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
        have=$("$runtime" run --rm --network none "$base" python3 -c \
            'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) ||
            die "base image $base has no python3"
        [ "$want" = "$have" ] ||
            die "base $base has Python $have, the host venv ($PY) has $want: use a base with $want"
    fi
    pull=()
    [ "$runtime" = podman ] && pull=(--pull=never)
    "$runtime" build --network none "${pull[@]}" "${base_args[@]}" \
        --label "org.hpcorch.context=$hash" --label "org.hpcorch.base=$base_id" \
        -f "$here/Dockerfile" -t "$tag" "$ctx" >"$here/build/build.log" 2>&1 ||
        { tail -n 20 "$here/build/build.log" >&2; die "$runtime build failed (log: $here/build/build.log)"; }
    "$runtime" run --rm --network none "$tag" python -c 'import hpcorch, hydra_plugins' ||
        die "the new image $tag cannot import hpcorch"
    rebuilt=1
    log "built $tag: $("$runtime" image inspect --format '{{.Id}}' "$tag" | cut -c1-19)"
fi

sif=${sif:-$here/build/hpcorch.sif}
if command -v apptainer >/dev/null && { [ "$rebuilt" -eq 1 ] || [ ! -e "$sif" ]; }; then
    archive=$here/build/hpcorch-oci.tar
    if [ "$runtime" = podman ]; then
        podman save --format oci-archive -o "$archive" "$tag"
        apptainer build --force "$sif" "oci-archive://$archive"
    else
        docker save -o "$archive" "$tag"
        apptainer build --force "$sif" "docker-archive://$archive"
    fi
    rm -f "$archive"
    log "converted to $sif"
fi

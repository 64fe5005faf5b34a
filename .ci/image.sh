#!/usr/bin/env bash
# Builds the container image from the Dockerfile without a Docker engine: Debian's buildah
# (`--isolation chroot`, as root) on a base image made from Debian's packages
# (`debootstrap --variant=minbase` plus python3), given to the Dockerfile as PYTHON_IMAGE. The
# Dockerfile's default base (python:3.11-slim-bookworm) stays what `docker build` uses.
#
# Cached in $BRIDGE_CACHE_DIR/image (default ~/.cache/bridge/image), shared by all checkouts:
#   base-<key>.tar   the debootstrapped root filesystem (key: suite, packages, BASE_REVISION)
#   wheels/          the bridge's dependencies (and its build backend) as wheels, made on the
#                    host with pip (the build itself needs no network: PIP_NO_INDEX)
# and in buildah's own storage: the base image, reused while its key is unchanged.
#
# Usage: .ci/image.sh [image name]   (default localhost/venue-bridge:ci)
# Prints phase timings and the image size; the last line is the image name.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${1:-${BRIDGE_IMAGE:-localhost/venue-bridge:ci}}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE_PACKAGES=python3,python3-venv
BASE_REVISION=1 # bump to rebuild the cached base (e.g. for Debian's security updates)

cache="${BRIDGE_CACHE_DIR:-$HOME/.cache/bridge}/image"
mkdir -p "$cache/wheels"
key=$(printf '%s %s %s %s' "$SUITE" "$BASE_PACKAGES" "$BASE_REVISION" "$(uname -m)" \
  | sha256sum | cut -c1-12)
BASE_IMAGE="localhost/bridge-base:$SUITE-$key"

log() { echo "image: $*" >&2; }
timed() { # timed <label> <command...>
  local label=$1 start=$SECONDS
  shift
  "$@"
  log "$label: $((SECONDS - start)) s"
}

ensure_tools() {
  local missing=()
  command -v buildah >/dev/null || missing+=(buildah)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  if ((${#missing[@]})); then
    [[ $(id -u) == 0 ]] || { log "needs root for apt-get install ${missing[*]}"; return 1; }
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
  fi
  log "$(buildah --version)"
}

# The root filesystem: Debian minbase + python3 (+ venv, for the build stage), without apt's
# package lists and caches, docs, man pages and translations.
make_rootfs_tar() {
  local root tar=$1
  root=$(mktemp -d "$cache/rootfs.XXXXXX")
  if ! debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$root" "$MIRROR" \
    >"$root.log" 2>&1; then
    tail -n 30 "$root.log" >&2
    rm -rf "$root" "$root.log"
    return 1
  fi
  rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
    "$root"/var/log/* "$root"/tmp/*
  tar --numeric-owner --xattrs -C "$root" -cf "$tar.tmp" .
  mv "$tar.tmp" "$tar"
  rm -rf "$root" "$root.log"
}

import_base() {
  local tar=$1 ctr mnt
  ctr=$(buildah from scratch)
  mnt=$(buildah mount "$ctr")
  tar --numeric-owner --xattrs -C "$mnt" -xf "$tar"
  buildah umount "$ctr" >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python3 "$ctr"
  buildah commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
}

base_image() {
  if buildah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
    log "base image $BASE_IMAGE: in buildah's storage"
    return
  fi
  local tar="$cache/base-$SUITE-$key.tar"
  if [[ ! -s $tar ]]; then
    timed "debootstrap $SUITE minbase + $BASE_PACKAGES" make_rootfs_tar "$tar"
  else
    log "base root filesystem: cached $tar"
  fi
  timed "import $BASE_IMAGE" import_base "$tar"
}

# Wheels for every requirement of pyproject.toml, made once per pyproject.toml (the stamp
# names its hash): warm builds do not touch the package index.
wheels() {
  local stamp python=${BRIDGE_WHEEL_PYTHON:-python3}
  # Compiled wheels must match the base's interpreter: Debian bookworm's python3 is 3.11.
  if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    log "$python is not Python 3.11 (the base image's); set BRIDGE_WHEEL_PYTHON"
    return 1
  fi
  stamp="$cache/wheels/.pyproject-$(sha256sum pyproject.toml | cut -c1-12)"
  if [[ -e $stamp ]]; then
    log "wheels: cached for this pyproject.toml"
    return
  fi
  "$python" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$cache/wheels" \
    --find-links "$cache/wheels" . 'setuptools>=69' wheel >&2
  rm -f "$cache/wheels"/bridge-*.whl # the bridge itself is built from the tree, in the image
  touch "$stamp"
}

build() {
  buildah bud --isolation chroot --layers=false --quiet \
    --build-arg "PYTHON_IMAGE=$BASE_IMAGE" \
    --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=/wheels \
    --volume "$cache/wheels:/wheels:ro" \
    --tag "$IMAGE" . >/dev/null
}

start=$SECONDS
ensure_tools
base_image
timed "wheels" wheels
timed "build $IMAGE" build
size=$(buildah inspect --type image --format '{{.FromImageDigest}}' "$IMAGE" >/dev/null \
  && buildah images --format '{{.Size}}' "$IMAGE" | head -n 1)
log "image $IMAGE: $size (base $(buildah images --format '{{.Size}}' "$BASE_IMAGE" | head -n 1))"
log "total: $((SECONDS - start)) s"
echo "$IMAGE"

#!/bin/sh
# `make image`: build the container image $IMAGE with podman (run from the repository's root).
#   IMAGE, VERSION        the tag and the version label (the Makefile passes both)
#   BASE_IMAGE            unset: the Debian base of hack/image/build-base.sh (built or reused); set: a
#                         registry image (pin it by digest), used for both stages unless BUILD_IMAGE is set
#   PIP_CA                the CA bundle pip trusts during the build (default: the host's); a build
#                         secret, never part of a layer; empty: pip's own
#   PYTHON                builds the project's wheel (python -m build) into build/image/
# Layers are cached by podman: a second build with unchanged sources takes seconds.
set -eu
: "${IMAGE:?IMAGE is required}" "${VERSION:?VERSION is required}"
python="${PYTHON:-python3}"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/hack/image/containers.conf}"
started="$(date +%s)"

if [ -z "${BASE_IMAGE:-}" ]; then
  sh hack/image/build-base.sh
  base=localhost/incident-operator-base:bookworm
  build_base="$base-build"
else
  base="$BASE_IMAGE"
  build_base="${BUILD_IMAGE:-$BASE_IMAGE}"
fi

# The wheel, with its files' timestamps from the last commit so that unchanged sources give the same
# wheel (and podman reuses the layers after it).
rm -rf build/image && mkdir -p build
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 315532800)}" \
  "$python" -m build --wheel --outdir build/image . >build/image.log 2>&1 ||
  { cat build/image.log >&2; echo "make image: the wheel did not build" >&2; exit 1; }

set -- --build-arg "BASE_IMAGE=$base" --build-arg "BUILD_IMAGE=$build_base" \
  --build-arg "VERSION=$VERSION" --build-arg "REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)"
if [ -n "${SOURCE_URL:-}" ]; then set -- "$@" --build-arg "SOURCE_URL=$SOURCE_URL"; fi
ca="${PIP_CA-/etc/ssl/certs/ca-certificates.crt}"
if [ -n "$ca" ] && [ -s "$ca" ]; then set -- "$@" --secret "id=pip-ca,src=$ca"; fi
podman build --isolation chroot --layers --pull=missing -f Containerfile -t "$IMAGE" "$@" . >build/image-build.log 2>&1 ||
  { tail -n 40 build/image-build.log >&2; echo "make image: podman build failed (log: build/image-build.log)" >&2; exit 1; }
size="$(podman image inspect --format '{{.Size}}' "$IMAGE")"
echo "image: built $IMAGE ($((size / 1000000)) MB) in $(( $(date +%s) - started )) s"

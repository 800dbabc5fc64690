#!/bin/sh
# The image's default base, built from Debian packages with mmdebstrap: no registry is needed.
#   localhost/incident-operator-base:bookworm        the run stage: python3, ca-certificates, tzdata
#                                                    (no pip, no ensurepip, no apt), user 65532 "nonroot"
#   localhost/incident-operator-base:bookworm-build  the build stage: the same plus python3-venv
# Both come from one mmdebstrap run, so their Python is the same build (the virtual environment made
# in the build stage runs in the run stage). Reused while this script is unchanged (the images carry
# its hash as a label); REBUILD=1 rebuilds. DEBIAN_MIRROR / DEBIAN_SECURITY_MIRROR point elsewhere
# (a snapshot.debian.org URL makes the base reproducible).
set -eu
tag="${BASE_TAG:-localhost/incident-operator-base:bookworm}"
suite=bookworm
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
recipe="$(cat "$0" | sha256sum | cut -c1-16)-$(printf '%s %s' "$mirror" "$security" | sha256sum | cut -c1-8)"
label=dev.incident-operator.base-recipe

current() { podman image inspect --format "{{ index .Labels \"$label\" }}" "$1" 2>/dev/null || true; }
if [ -z "${REBUILD:-}" ] && [ "$(current "$tag")" = "$recipe" ] && [ "$(current "$tag-build")" = "$recipe" ]; then
  echo "base: reusing $tag and $tag-build (recipe $recipe)"
  exit 0
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/incident-operator-base.XXXXXX")"
trap 'rm -rf "$work"' EXIT
started="$(date +%s)"
# essential: dpkg and the Essential:yes set only (no apt); documentation, man pages and locales are
# left out except the packages' copyright files (their licences).
mmdebstrap --quiet --variant=essential --mode=root --format=directory \
  --include=python3,python3-venv,ca-certificates,tzdata \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  "$suite" "$work/build" \
  "deb $mirror $suite main" "deb $mirror $suite-updates main" "deb $security $suite-security main"

# The run stage: the same tree without pip's wheels and ensurepip (python3-venv and what only it needs).
cp -a "$work/build" "$work/run"
chroot "$work/run" dpkg --purge python3-venv python3.11-venv python3-pip-whl python3-setuptools-whl >/dev/null
echo 'nonroot:x:65532:65532:incident-operator:/nonexistent:/usr/sbin/nologin' >>"$work/run/etc/passwd"
echo 'nonroot:x:65532:' >>"$work/run/etc/group"
rm -rf "$work/run/var/cache/debconf/"*-old "$work/run/var/lib/dpkg/"*-old

for stage in build run; do
  name="$tag"; [ "$stage" = build ] && name="$tag-build"
  tar -C "$work/$stage" --numeric-owner -cf "$work/$stage.tar" .
  podman import --quiet --change "LABEL $label=$recipe" --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
    --change 'CMD ["/usr/bin/python3"]' "$work/$stage.tar" "$name" >/dev/null
  rm -f "$work/$stage.tar"
done
echo "base: built $tag and $tag-build from Debian $suite in $(( $(date +%s) - started )) s"

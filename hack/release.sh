#!/bin/sh
# `make release VERSION=x.y.z`: everything a release publishes, in dist/ (run from the repository's root).
#   incident_operator-V-py3-none-any.whl, incident_operator-V.tar.gz   python -m build, twine check --strict
#   incident-operator-V.oci.tar               the image (podman save --format oci-archive)
#   incident-operator-V.sbom.cdx.json         its CycloneDX SBOM (the copy inside the image)
#   install.yaml                              manifests/install.yaml (its image tag must be V)
#   incident-operator-V.tgz                   the Helm chart, when charts/incident-operator exists
#   SHA256SUMS                                of all the above
# then prints the CHANGELOG's section for V. VERSION must be the package's version (pyproject.toml and
# operator/incident_operator/__init__.py): a release is made from a commit that says so, never by
# editing sources here. IMAGE_BUILT=1: the image $IMAGE is already built from this tree (not rebuilt).
set -eu
: "${VERSION:?}" "${PACKAGE_VERSION:?}" "${IMAGE:?}"
python="${PYTHON:-python3}"
out="${DIST_DIR:-dist}"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/hack/image/containers.conf}"
fail() { echo "make release: $*" >&2; exit 2; }

pyproject="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)"
[ "$VERSION" = "$PACKAGE_VERSION" ] && [ "$VERSION" = "$pyproject" ] ||
  fail "VERSION=$VERSION, but the package is $PACKAGE_VERSION (operator/incident_operator/__init__.py) and $pyproject (pyproject.toml): set the version in both, commit, then release"
notes="$(awk -v head="## [$VERSION]" 'index($0, head) == 1 {on = 1; print; next} on && (/^## \[/ || /^\[[^]]*\]: /) {exit} on {print}' CHANGELOG.md)"
[ -n "$notes" ] || fail "CHANGELOG.md has no section '## [$VERSION]': move the [Unreleased] lines under it first"
grep -q "^ *image: incident-operator:$VERSION\$" manifests/install.yaml ||
  fail "manifests/install.yaml does not run incident-operator:$VERSION: set newTag in manifests/install/kustomization.yaml and run make install-manifests"

mkdir -p "$out"
name="incident-operator-$VERSION"
rm -f "$out/incident_operator-$VERSION"* "$out/$name".* "$out/install.yaml" "$out/SHA256SUMS"
epoch="$(git log -1 --format=%ct 2>/dev/null || echo 315532800)"
SOURCE_DATE_EPOCH="$epoch" "$python" -m build --outdir "$out" . >"$out/build.log" 2>&1 ||
  { cat "$out/build.log" >&2; fail "python -m build failed"; }
rm -f "$out/build.log"
"$python" -m twine check --strict "$out/incident_operator-$VERSION"*
files="incident_operator-$VERSION-py3-none-any.whl incident_operator-$VERSION.tar.gz"

if [ "${IMAGE_BUILT:-}" != 1 ]; then
  IMAGE="$IMAGE" VERSION="$VERSION" PYTHON="$python" sh hack/image/build.sh
fi
label="$(podman image inspect --format '{{ index .Labels "org.opencontainers.image.version" }}' "$IMAGE")"
[ "$label" = "$VERSION" ] || fail "the image $IMAGE is labelled version '$label', not $VERSION"
podman save --quiet --format oci-archive -o "$out/$name.oci.tar" "$IMAGE"
podman run --rm --network none --entrypoint /bin/cat "$IMAGE" /usr/share/doc/incident-operator/sbom.cdx.json \
  >"$out/$name.sbom.cdx.json"
cp manifests/install.yaml "$out/install.yaml"
files="$files $name.oci.tar $name.sbom.cdx.json install.yaml"

if [ -d charts/incident-operator ]; then
  built="$(python3 localcluster/localcluster.py build-helm)" ||
    fail "charts/incident-operator exists but 'localcluster.py build-helm' failed"
  helm_dir="$(printf '%s\n' "$built" | tail -n 1)"
  [ -x "$helm_dir/helm" ] || fail "'localcluster.py build-helm' printed $helm_dir, which has no helm"
  "$helm_dir/helm" package charts/incident-operator --version "$VERSION" --app-version "$VERSION" \
    --destination "$out" >/dev/null
  files="$files $name.tgz"
fi

# shellcheck disable=SC2086  # the names have no spaces
(cd "$out" && sha256sum $files >SHA256SUMS)
echo "release $VERSION in $out/:"
(cd "$out" && ls -l $files SHA256SUMS | awk '{printf "  %-48s %10d bytes\n", $NF, $5}')
echo
echo "$notes"

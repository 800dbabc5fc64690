#!/bin/sh
# Build the project's wheel and install it into a fresh virtual environment at $1.
# The Containerfile's build stage runs this; tests/e2e/test_image.py runs it too, so the image's
# install steps are proven on machines without a container engine.
set -eu
venv="${1:?usage: install-wheel.sh VENV_DIR}"
python="${PYTHON:-python3}"
dist="$(mktemp -d)"
trap 'rm -rf "$dist"' EXIT
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$dist" .
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet "$dist"/incident_operator-*.whl

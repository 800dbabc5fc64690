"""The container image without a container engine: the Containerfile's references are checked, and its
install steps (hack/install-wheel.sh: build the wheel, install it into a fresh virtual environment)
are run here exactly as its build stage runs them, then the installed console script is started.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "Containerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    found = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def test_the_containerfile_is_multi_stage_pinned_non_root_and_shell_free_at_run_time() -> None:
    steps = instructions()
    args = dict(a.split("=", 1) for w, a in steps if w == "ARG")
    base = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"docker\.io/library/python:3\.11\.\d+-slim-bookworm", base), base  # a pinned patch
    stages = [a for w, a in steps if w == "FROM"]
    assert len(stages) == 2
    assert stages[0] == "${PYTHON_IMAGE} AS build"
    assert stages[1] == "${PYTHON_IMAGE}"  # same interpreter the virtual environment was made with
    final = steps[[i for i, (w, _) in enumerate(steps) if w == "FROM"][1] :]
    user = [a for w, a in final if w == "USER"]
    assert len(user) == 1
    uid, _, gid = user[0].partition(":")
    assert uid.isdigit(), user  # numeric, so runAsNonRoot can verify it
    assert int(uid) > 0, user
    assert gid.isdigit(), user
    assert int(gid) > 0, user
    entrypoint = json.loads(next(a for w, a in final if w == "ENTRYPOINT"))  # exec form: no shell
    assert entrypoint == ["/opt/incident-operator/bin/incident-operator", "run"]
    assert not [a for w, a in final if w == "RUN"]  # nothing runs in the final stage


def test_every_file_the_containerfile_copies_exists() -> None:
    for word, arguments in instructions():
        if word != "COPY" or arguments.startswith("--from="):
            continue
        *sources, _destination = arguments.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: missing"
    ignored = (ROOT / ".containerignore").read_text().split()
    assert ".venv" in ignored
    assert ".git" in ignored


def test_the_install_steps_build_a_working_virtual_environment(tmp_path: Path) -> None:
    venv = tmp_path / "opt" / "incident-operator"
    # Same script, same arguments as the build stage; a copy of the sources stands in for /src.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "operator", src / "operator", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    shutil.copytree(ROOT / "hack", src / "hack")
    done = subprocess.run(
        ["sh", "hack/install-wheel.sh", str(venv)],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
        env={**os.environ, "PYTHON": sys.executable, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    script = venv / "bin" / "incident-operator"
    helped = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert helped.returncode == 0, helped.stderr
    assert "run" in helped.stdout
    run_help = subprocess.run(
        [str(script), "run", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert "--leader-elect" in run_help.stdout
    # Installed from the wheel, not linked to the working tree.
    located = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import incident_operator; print(incident_operator.__file__)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert located.stdout.startswith(str(venv)), located.stdout

"""Pure parts of the local-cluster script: Go checks, options, cache key, node manifests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.localcluster_module import load, load_promstack

lc = load()


def fake_go(tmp_path: Path, version: str) -> str:
    script = tmp_path / "go"
    script.write_text(f"#!/bin/sh\necho {version}\n")
    script.chmod(0o755)
    return str(tmp_path)


def test_missing_go_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(lc.ClusterError, match=r"Go is not installed.*Install Go >= 1\.26"):
        lc.go_version()


def test_old_go_is_refused_with_the_needed_version(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", fake_go(tmp_path, "go1.22.5"))
    with pytest.raises(lc.ClusterError, match=r"Go 1\.22 is too old: Kubernetes v1\.36\.3 needs Go >= 1\.26"):
        lc.go_version()


def test_new_enough_go_is_accepted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", fake_go(tmp_path, "go1.27.1"))
    assert lc.go_version() == (1, 27)


def test_cache_key_is_stable_and_names_the_versions() -> None:
    assert lc.build_key() == lc.build_key()
    assert "v1.36.3" in lc.bin_dir().name
    assert "v0.8.0" in lc.bin_dir().name


def test_binaries_report_the_pinned_release() -> None:
    flags = lc.ldflags()
    assert "-X k8s.io/component-base/version.gitVersion=v1.36.3" in flags
    assert "-X k8s.io/component-base/version.gitMinor=36" in flags


def test_extra_args_are_grouped_per_component() -> None:
    parsed = lc.parse_extra_args(
        ["kube-apiserver=--v=4", "kwok=--v=2", "kube-apiserver=--feature-gates=A=true"]
    )
    assert parsed == {"kube-apiserver": ["--v=4", "--feature-gates=A=true"], "kwok": ["--v=2"]}


@pytest.mark.parametrize("bad", ["kube-proxy=--v=2", "kube-apiserver", "kube-apiserver=v=2"])
def test_bad_extra_args_are_explained(bad: str) -> None:
    with pytest.raises(lc.ClusterError, match="expected COMPONENT=--flag"):
        lc.parse_extra_args([bad])


def test_nodes_are_managed_by_kwok_and_schedulable() -> None:
    node = lc.node_manifest("kwok-node-7")
    assert node["metadata"]["annotations"][lc.NODE_ANNOTATION] == "fake"
    assert "taints" not in node["spec"]
    assert node["status"]["allocatable"]["pods"] == "110"


def test_a_foreign_directory_is_never_removed(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(lc.ClusterError, match="does not look like a local-cluster data directory"):
        lc.prepare_data_dir(tmp_path)
    assert (tmp_path / "precious.txt").exists()


def test_pid_check_rejects_processes_that_are_not_ours() -> None:
    import os

    assert not lc.pid_is_ours(os.getpid(), "/nonexistent/bin")
    assert not lc.pid_is_ours(2**22 + 1, "/")


def test_restart_refuses_a_cluster_it_does_not_know_how_to_restart(tmp_path: Path) -> None:
    with pytest.raises(lc.ClusterError, match="no cluster in"):
        lc.restart(tmp_path / "nothing", "etcd")
    state = lc.State(data_dir=str(tmp_path), bin_dir="/nonexistent")
    state.save()  # as written by an older version: no command lines recorded
    with pytest.raises(lc.ClusterError, match="cannot restart 'etcd': known components: none"):
        lc.restart(tmp_path, "etcd")


def test_an_old_state_file_still_loads(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text('{"data_dir": "x", "bin_dir": "y", "pids": {"etcd": 1}}')
    state = lc.State.load(tmp_path)
    assert state is not None
    assert state.argvs == {}


def test_the_local_prometheus_scrapes_the_operator_with_a_bearer_token(tmp_path: Path) -> None:
    promstack = load_promstack()
    token = tmp_path / "token"
    targets = {"incident-operator": ("127.0.0.1:18080", {"namespace": "demo"}), "web": ("127.0.0.1:1", {})}
    document = promstack.config_document(targets, None, [], token_files={"incident-operator": token})
    operator, web = document["scrape_configs"]
    assert operator["authorization"] == {"type": "Bearer", "credentials_file": str(token)}
    assert "authorization" not in web
    with pytest.raises(promstack.StackError, match="without a target: nope"):
        promstack.config_document(targets, None, [], token_files={"nope": token})
    out = tmp_path / "prometheus.yml"
    args = ["config", str(out), "--target", "incident-operator=127.0.0.1:18080", "--token-file"]
    assert promstack.main([*args, f"incident-operator={token}"]) == 0
    assert str(token) in out.read_text()

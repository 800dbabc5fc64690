"""The shipped argocd-cm entries (manifests/argocd/argocd-cm-health.yaml) carry the Lua health
scripts of manifests/argocd/health/ verbatim, under Argo CD's keys; the scripts themselves run on
real objects in tests/e2e/test_argocd_health.py."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.localcluster_module import load_hack

ROOT = Path(__file__).resolve().parents[2]


def test_the_argocd_cm_entries_are_the_scripts_and_not_stale() -> None:
    luahealth = load_hack("luahealth")
    shipped = ROOT / "manifests" / "argocd" / "argocd-cm-health.yaml"
    assert shipped.read_text() == luahealth.argocd_cm(), "run `python hack/luahealth.py argocd-cm`"
    configmap = yaml.safe_load(shipped.read_text())
    assert (configmap["kind"], configmap["metadata"]["name"]) == ("ConfigMap", "argocd-cm")
    keys = {
        f"resource.customizations.health.incident-operator.dev_{kind}"
        for kind in ("Incident", "Playbook", "Drill")
    }
    assert set(configmap["data"]) == keys
    for kind, script in luahealth.KINDS.items():
        key = f"resource.customizations.health.incident-operator.dev_{kind}"
        assert configmap["data"][key] == (ROOT / "manifests" / "argocd" / "health" / script).read_text()

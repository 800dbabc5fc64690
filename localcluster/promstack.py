"""The local stack's Prometheus: its rule file, its configuration and a process to run.

The rules are extracted from `manifests/monitoring/prometheusrule.yaml` (a prometheus-operator
PrometheusRule, what a cluster installs), never copied by hand: `rules_document` returns the very
`spec.groups` of that object as a Prometheus rule file. `config_document` writes a configuration
that scrapes fixed loopback targets (with a bearer token where one is needed: the operator's
/metrics), evaluates the rules and sends to a real Alertmanager.
`Prometheus` starts the binary built by `localcluster.py build-prometheus`, waits until it is
ready and answers queries; tests and `make demo` use it.

Needs PyYAML (the project's virtual environment); `python localcluster/promstack.py rules OUT`
writes the rule file, `config` writes a configuration (see --help).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_RULE = ROOT / "manifests" / "monitoring" / "prometheusrule.yaml"


class StackError(Exception):
    """Something of the local Prometheus is wrong; the message says what."""


def rules_document(source: Path = PROMETHEUS_RULE) -> dict[str, Any]:
    """The rule groups of the PrometheusRule in `source`, as a Prometheus rule file."""
    documents = [d for d in yaml.safe_load_all(source.read_text()) if d]
    rules = [d for d in documents if d.get("kind") == "PrometheusRule"]
    if len(rules) != 1:
        raise StackError(f"{source}: expected one PrometheusRule, found {len(rules)}")
    groups = (rules[0].get("spec") or {}).get("groups")
    if not groups:
        raise StackError(f"{source}: the PrometheusRule has no spec.groups")
    return {"groups": groups}


def write_rules(out: Path, source: Path = PROMETHEUS_RULE) -> Path:
    out.write_text(
        f"# Extracted from {source.name} by localcluster/promstack.py; do not edit.\n"
        + yaml.safe_dump(rules_document(source), sort_keys=False)
    )
    return out


def config_document(
    targets: dict[str, tuple[str, dict[str, str]]],
    alertmanager: str | None,
    rule_files: list[Path],
    interval: str = "1s",
    token_files: dict[str, Path] | None = None,
) -> dict[str, Any]:
    """A configuration scraping `targets` (job -> (host:port, labels)) every `interval`,
    evaluating `rule_files` as often, and sending alerts to `alertmanager` (host:port). A job in
    `token_files` sends the bearer token in that file (the operator's /metrics needs one: a
    ServiceAccount bound to ClusterRole incident-operator-metrics-reader)."""
    token_files = token_files or {}
    unknown = set(token_files) - set(targets)
    if unknown:
        raise StackError(f"token files for jobs without a target: {', '.join(sorted(unknown))}")

    def scrape(job: str, address: str, labels: dict[str, str]) -> dict[str, Any]:
        config: dict[str, Any] = {
            "job_name": job,
            "static_configs": [{"targets": [address], "labels": labels}],
        }
        if job in token_files:
            config["authorization"] = {"type": "Bearer", "credentials_file": str(token_files[job])}
        return config

    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [scrape(job, address, labels) for job, (address, labels) in targets.items()],
    }
    if alertmanager:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return config


class Prometheus:
    """A running Prometheus on 127.0.0.1 with the given configuration, and its HTTP API."""

    def __init__(self, bin_dir: Path, workdir: Path, port: int, config: dict[str, Any]) -> None:
        self.bin_dir, self.workdir, self.port = bin_dir, workdir, port
        self.url = f"http://127.0.0.1:{port}"
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = workdir / "prometheus.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    str(bin_dir / "prometheus"),
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--rules.alert.resend-delay=1s",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_ready()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StackError(f"prometheus exited ({self.proc.returncode}):\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:  # noqa: S310
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise StackError(f"prometheus not ready within {timeout}s:\n{self.log_path.read_text()}")

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=5) as resp:  # noqa: S310
            body = json.load(resp)
        if body.get("status") != "success":
            raise StackError(f"{path}: {body}")
        return body["data"]

    def alerts(self) -> list[dict[str, Any]]:
        """The alerting rules' current alerts (pending and firing)."""
        return list(self.api("alerts")["alerts"])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="promstack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_rules = sub.add_parser("rules", help="write the rule file extracted from the PrometheusRule")
    p_rules.add_argument("out", type=Path)
    p_config = sub.add_parser("config", help="write a configuration for the local stack")
    p_config.add_argument("out", type=Path)
    p_config.add_argument("--rules", type=Path, action="append", default=[], help="a rule file")
    p_config.add_argument("--alertmanager", default=None, help="host:port of Alertmanager")
    p_config.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="JOB=HOST:PORT[,LABEL=VALUE...]",
        help="a scrape target with its labels (repeatable)",
    )
    p_config.add_argument(
        "--token-file",
        action="append",
        default=[],
        metavar="JOB=FILE",
        help="scrape JOB with the bearer token in FILE (repeatable; the operator's /metrics needs one)",
    )
    args = parser.parse_args(argv)
    if args.command == "rules":
        print(write_rules(args.out))
        return 0
    targets: dict[str, tuple[str, dict[str, str]]] = {}
    for spec in args.target:
        job, _, rest = spec.partition("=")
        address, *labels = rest.split(",")
        if not job or not address:
            parser.error(f"--target {spec!r}: expected JOB=HOST:PORT[,LABEL=VALUE...]")
        targets[job] = (address, dict(label.split("=", 1) for label in labels))
    token_files: dict[str, Path] = {}
    for spec in args.token_file:
        job, _, path = spec.partition("=")
        if not job or not path:
            parser.error(f"--token-file {spec!r}: expected JOB=FILE")
        token_files[job] = Path(path).resolve()
    try:
        document = config_document(targets, args.alertmanager, args.rules, token_files=token_files)
    except StackError as exc:
        parser.error(str(exc))
    args.out.write_text(yaml.safe_dump(document, sort_keys=False))
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The `incident-operator` console script: argument parsing and nothing else."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

from incident_operator import __version__
from incident_operator.settings.config import ConfigError, FileConfig, OperatorConfig, load_config_file

DESCRIPTION = """\
incident-operator turns an incident-response procedure into Kubernetes API objects:
Incidents move through Detected, Acknowledged, Investigating, Mitigating, Monitoring,
Resolved and Closed while Playbooks remediate (scale, restart, check health, notify).
"""

RUN_EPILOG = """\
The operator uses the current kubeconfig (KUBECONFIG or ~/.kube/config), or the in-cluster
service account when deployed. HTTP endpoints on --http-port: /healthz, /readyz,
POST /alertmanager (Alertmanager webhook, its bearer token), and with a Kubernetes bearer token
(TokenReview + SubjectAccessReview) /metrics (get on the URL /metrics) and /reports/YYYY-MM
(list incidents). On --status-port: the public status page /status, /status.json, /status/feed.atom.
Install the CRDs first:  kubectl apply -f crds/
(or the whole install: helm install ... charts/incident-operator, or kubectl apply -k manifests/install)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="incident-operator", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="run the operator against the current cluster",
        description="Run the operator against the current kubeconfig until interrupted.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        metavar="NS",
        help="watch only this namespace (repeatable; default: all namespaces)",
    )
    run.add_argument(
        "--http-port",
        type=int,
        default=8080,
        help="port of /healthz, /readyz, /alertmanager, /metrics and /reports (default 8080)",
    )
    run.add_argument(
        "--status-port",
        type=int,
        default=8081,
        help="port of the public status page, alone (default 8081; links from statusPage.baseURL)",
    )
    run.add_argument(
        "--http-host",
        default="0.0.0.0",  # noqa: S104 - the operator serves inside its pod
        help="address to listen on, both ports (default 0.0.0.0)",
    )
    run.add_argument("--config", type=Path, help="YAML settings file (response targets, alert intake)")
    run.add_argument(
        "--alert-token-secret",
        metavar="NAMESPACE/NAME",
        help="Secret whose key 'token' is the bearer token Alertmanager must send to /alertmanager",
    )
    run.add_argument(
        "--allow-egress",
        action="append",
        default=[],
        metavar="CIDR_OR_HOST",
        help="let outgoing requests (httpCheck, notify, channels) reach this CIDR or host (repeatable; "
        "loopback, link-local/metadata and the API server are denied unless allowed by CIDR; the API "
        "server's own address and port never)",
    )
    run.add_argument(
        "--leader-elect",
        action="store_true",
        help="take part in leader election on a Lease (leaderElection: in --config): only the leader "
        "reconciles, every replica serves HTTP; needed whenever more than one replica runs",
    )
    run.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    return parser


SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def pod_namespace() -> str:
    """The namespace the operator runs in: POD_NAMESPACE, the pod's service account, else the default."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "incident-operator"
    except OSError:
        return "incident-operator"


SYNC_CLIENT = "kubernetes"
HTTPX_CLI = "httpx._main"


def without_the_sync_client() -> None:
    """Make the official synchronous client unimportable in the operator's process: it runs on
    `kubernetes_asyncio` only, but kopf imports the official client's models whenever that package
    is installed (it is: the `kubectl incident` plugin uses it), and its model code would sit in
    memory twice. `sys.modules[name] = None` makes `import kubernetes` raise ImportError, which kopf
    expects of an optional library (it then logs in through `kubernetes_asyncio`). Called before
    kopf is imported; a process that already imported the client keeps it. Also makes
    `kubernetes_asyncio` load its models on first use (`adapters.lazyclient`), and httpx's command
    line (`httpx._main`) unimportable: httpx imports it, with rich and pygments, whenever those are
    installed (a developer's environment has them; the image does not), 4 MB the operator never
    uses (httpx then defines a `main` that says the extra is missing)."""
    for unused in (SYNC_CLIENT, HTTPX_CLI):
        if unused not in sys.modules:
            sys.modules[unused] = None  # type: ignore[assignment]
    from incident_operator.adapters import lazyclient  # kopf imports the client before our adapters

    lazyclient.install()


def _leave(code: int) -> NoReturn:
    """The operator has stopped (its cleanup done, its last writes made or given up): exit now.
    Not through the interpreter's finalization, which joins any thread still alive (the synchronous
    client's pool threads did: one still in a request an unanswering API server never answered held
    the exit after SIGTERM for the request's whole timeout, retries included, issue 22: 31 s; the
    asynchronous client has none, but a library's thread must not hold the exit either). What such
    a call was doing is what a crash leaves, and a restart finishes it (decisions are persisted
    before acting; a workload lock not given back goes stale)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "run":
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs every request URL at INFO, and a webhook URL is a secret: never at INFO or DEBUG.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    if not args.verbose:  # kopf logs every handler run per object: noise, and CPU, at scale
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    try:
        file_config = load_config_file(args.config) if args.config else FileConfig()
        token_secret = None
        if args.alert_token_secret:
            namespace, _, name = args.alert_token_secret.partition("/")
            if not namespace or not name:
                raise ValueError("--alert-token-secret must be NAMESPACE/NAME")
            token_secret = (namespace, name)
        config = OperatorConfig(
            alert_token_secret=token_secret,
            namespaces=tuple(args.namespace),
            http_host=args.http_host,
            http_port=args.http_port,
            status_port=args.status_port,
            leader_elect=args.leader_elect,
            allow_egress=tuple(args.allow_egress),
            own_namespace=pod_namespace(),
            file=file_config,
        )
    except ConfigError as exc:
        print(f"incident-operator: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"incident-operator: invalid option: {exc}", file=sys.stderr)
        return 2
    for channel in file_config.notifications.channels:
        if channel.ignored:  # 0.1 accepted fields of other channel types; they still do nothing
            logging.getLogger("incident_operator").warning(
                "config: channel %s (%s) ignores %s, which a %s channel does not use",
                channel.name,
                channel.type,
                ", ".join(channel.ignored),
                channel.type,
            )
    without_the_sync_client()
    from incident_operator.adapters.kube import ConfigException
    from incident_operator.runtime import runner  # kopf is imported only when running

    try:
        asyncio.run(runner.run(config))
        _leave(0)
    except OSError as exc:
        print(f"incident-operator: {exc}", file=sys.stderr)
        return 1
    except ConfigException as exc:
        where = "KUBECONFIG, ~/.kube/config or in-cluster"
        print(f"incident-operator: no Kubernetes configuration ({where}): {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

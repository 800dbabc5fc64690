"""The simulated year of `make bench` (issue 22): retention keeps the cost flat.

BENCH_YEAR_INCIDENTS (default 100,000; BENCH_YEAR=0 skips the stage) incidents of realistic history
(`history`) are created in their own namespace by 16 writers while the operator is stopped, each
with its status written at once, moved back in time so that `status.closedAt` spreads evenly over
the last twelve months. Then:

1. the operator (as configured for the rest of the bench) starts on them: RSS once settled, and the
   monthly report (`/reports/YYYY-MM?namespace=...&format=json`) of every month that has incidents;
2. it restarts with `retention: {closedForDays: 90}` (DESIGN.md "History"): objects remaining and
   RSS every few seconds until no incident closed more than 90 days ago is left (or retention makes
   no progress for BENCH_YEAR_STALL seconds, or BENCH_YEAR_TIMEOUT passes: said, not hung on);
3. RSS once settled, and every month's report again: the same numbers.

When the code under test has no retention (its config refuses the field, or the IncidentArchive
kind is not installed), the stage says so and measures step 1 only. Returns Markdown; draws
bench-year.png (matplotlib).
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import history
import scale
from kubernetes import client

GROUP, VERSION = "incident-operator.dev", "v1alpha1"
NS = "bench-year"
ENABLED = os.environ.get("BENCH_YEAR", "1") != "0"
INCIDENTS = int(os.environ.get("BENCH_YEAR_INCIDENTS", "100000"))
STALL_S = float(os.environ.get("BENCH_YEAR_STALL", "180"))
TIMEOUT_S = float(os.environ.get("BENCH_YEAR_TIMEOUT", "3600"))
SAMPLE_S = 5.0
SETTLE_S = 900.0
"""At most this long for the operator's CPU to settle after it starts on a year of incidents."""
KEEP_DAYS = 90
RETENTION_CANDIDATES = ({"closedForDays": KEEP_DAYS, "deletesPerSecond": 100}, {"closedForDays": KEEP_DAYS})
"""Retention as configured, most useful first: with a delete pace that keeps the bench short, if the
code under test has one (DESIGN.md names only `closedForDays`; the pace is the implementation's)."""
READER = "bench-year-reader"

Start = Callable[[dict[str, Any]], int]
"""Starts the operator with these extra top-level config keys; returns its PID once it is ready."""
Stop = Callable[[], None]


def count(custom: client.CustomObjectsApi, ns: str) -> int:
    """Incidents in `ns`, from one page of one (the API server counts the rest)."""
    page = cast(
        dict[str, Any], custom.list_namespaced_custom_object(GROUP, VERSION, ns, "incidents", limit=1)
    )
    return len(page["items"]) + int(page["metadata"].get("remainingItemCount") or 0)


def closing_times(now: datetime) -> list[datetime]:
    """When each incident of the year closed: evenly over the last twelve months, oldest first."""
    year = timedelta(days=365)
    return [now - year + year * (i + 0.5) / INCIDENTS for i in range(INCIDENTS)]


def create_year(custom: client.CustomObjectsApi, template: history.Template, now: datetime) -> dict[str, Any]:
    """Every incident of the year, its backdated status written right after its create (the
    operator is stopped: nothing races the status). Returns the months of detection and timings."""
    times = closing_times(now)
    detected = template.status.get("detectedAt")
    open_for = (
        template.closed_at - history.parse(str(detected)) if detected and template.closed_at else timedelta()
    )
    months = Counter((closed - open_for).strftime("%Y-%m") for closed in times)

    def one(i: int) -> None:
        name = f"y{i:06d}"
        history.create(custom, NS, template, name)
        history.write_status(custom, NS, template, name, times[i])

    started = time.monotonic()
    scale._in_parallel(list(range(INCIDENTS)), one)
    return {"months": months, "times": times, "created_s": time.monotonic() - started}


def reader_token(core: client.CoreV1Api, rbac: client.RbacAuthorizationV1Api) -> str:
    """A ServiceAccount allowed to list the year's incidents: who reads its reports."""
    core.create_namespaced_service_account(
        NS, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=READER))
    )
    meta = client.V1ObjectMeta(name=READER)
    rule = client.V1PolicyRule(api_groups=[GROUP], resources=["incidents"], verbs=["list"])
    rbac.create_namespaced_role(NS, client.V1Role(metadata=meta, rules=[rule]))
    binding = client.V1RoleBinding(
        metadata=meta,
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name=READER),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name=READER, namespace=NS)],
    )
    rbac.create_namespaced_role_binding(NS, binding)
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=7200)
    )
    status = core.create_namespaced_service_account_token(READER, NS, request).status
    assert status is not None  # noqa: S101 - the API answers a TokenRequest with its token
    return str(status.token)


def reports(port: int, token: str, months: list[str]) -> dict[str, Any]:
    """Every month's report of the year's namespace, as the operator serves it (JSON). Asked all at
    once: the operator lists the namespace once for all who ask at the same moment (its listing of
    a year of incidents takes a while; asked one after another, each month would list again)."""

    def one(month: str) -> Any:
        url = f"http://127.0.0.1:{port}/reports/{month}?namespace={NS}&format=json"
        deadline = time.monotonic() + 900  # 503 while the API cannot be listed: try again
        while True:
            request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
            try:
                with urllib.request.urlopen(request, timeout=600) as resp:  # noqa: S310 - loopback
                    return json.loads(resp.read())
            except (
                OSError,
                http.client.HTTPException,
                ValueError,
            ) as exc:  # URLError; a dropped or cut answer
                refused = isinstance(exc, urllib.error.HTTPError) and exc.code != 503
                if refused or time.monotonic() > deadline:
                    return {"error": str(exc)}
                time.sleep(2)

    with ThreadPoolExecutor(max(1, len(months))) as pool:
        return dict(zip(months, pool.map(one, months), strict=True))


def retention_config(work: Path, base: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The first retention the code under test accepts (its own config loader says), or None and
    its words refusing the last one."""
    refusal = ""
    for candidate in RETENTION_CANDIDATES:
        path = work / "retention-check.json"
        path.write_text(json.dumps({**base, "retention": candidate}))
        check = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys, pathlib; from incident_operator.settings.config import load_config_file; "
                "load_config_file(pathlib.Path(sys.argv[1]))",
                str(path),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode == 0:
            return candidate, ""
        said = [line.strip() for line in check.stderr.splitlines() if "retention" in line]
        refusal = "its config refuses `retention`: " + (" ".join(said[:2]) or check.stderr.strip()[-200:])
    return None, refusal


def archive_kind_installed(extensions: client.ApiextensionsV1Api) -> bool:
    try:
        extensions.read_custom_resource_definition(f"incidentarchives.{GROUP}")
    except client.exceptions.ApiException:
        return False
    return True


RETENTION_BEGAN = b"retention: a pass began"
RETENTION_ENDED = b" deleted, "
"""In the line a pass ends with (`retention: N due, N archived, N deleted, N kept`)."""


class LogMark:
    """Whether a line has appeared in a growing log since this mark was made (read on from where
    the last call stopped: the operator's log of a bench is large)."""

    def __init__(self, path: Path, needle: bytes) -> None:
        self.path, self.needle = path, needle
        self.offset = path.stat().st_size if path.exists() else 0
        self.tail = b""

    def __call__(self) -> bool:
        if not self.path.exists():
            return False
        with self.path.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        self.offset += len(chunk)
        found = self.needle in self.tail + chunk
        self.tail = chunk[-len(self.needle) :]
        return found


def wait_for_retention(
    custom: client.CustomObjectsApi,
    pid: int,
    expected: Callable[[], int],
    began: Callable[[], bool],
    ended: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """Sample (seconds, objects, RSS) until at most `expected()` incidents remain, the pass says
    it `ended()` (what turned 90 days old after its listing waits for the next hourly pass),
    retention stalls for STALL_S after its pass `began()` (the operator's start listing before it
    is not counted as a stall), or TIMEOUT_S passes."""
    started = last_progress = time.monotonic()
    passing = False
    samples: list[tuple[float, int, float]] = []
    lowest = None
    outcome = "done"
    while True:
        objects = count(custom, NS)
        now = time.monotonic()
        samples.append((now - started, objects, scale.rss_mb(pid)))
        if not passing and began():
            passing, last_progress = True, now
        if lowest is None or objects < lowest:
            lowest, last_progress = objects, now
        if objects <= expected():
            break
        if ended():
            outcome = (
                "done (its first pass ended; what crossed the line since its listing waits for the next)"
            )
            break
        if passing and now - last_progress > STALL_S:
            outcome = f"stalled: no incident archived for {STALL_S:.0f} s after the pass began"
            break
        if now - started > TIMEOUT_S:
            outcome = f"timed out after {TIMEOUT_S:.0f} s"
            break
        time.sleep(SAMPLE_S)
    return {"samples": samples, "outcome": outcome, "seconds": time.monotonic() - started}


def chart(
    path: Path,
    months: Counter[str],
    remaining: Counter[str],
    samples: list[tuple[float, int, float]],
    rss_10k: float | None,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names = sorted(months)
    x = range(len(names))
    left.bar([i - 0.2 for i in x], [months[m] for m in names], 0.4, label="created", color="tab:gray")
    left.bar(
        [i + 0.2 for i in x],
        [remaining.get(m, 0) for m in names],
        0.4,
        label="objects left",
        color="tab:blue",
    )
    left.set_xticks(list(x), names, rotation=60, fontsize=7)
    left.set_ylabel("incidents (month of detection)")
    left.set_title(f"Simulated year: retention {KEEP_DAYS} days")
    left.legend(loc="lower right")
    if samples:
        right.plot([s[0] for s in samples], [s[1] for s in samples], "-", label="incident objects")
        right.set_xlabel("seconds since the operator started with retention")
        right.set_ylabel("incident objects in the namespace")
        twin = right.twinx()
        twin.plot([s[0] for s in samples], [s[2] for s in samples], "--", color="tab:red", label="RSS (MB)")
        twin.set_ylabel("operator RSS, MB")
        if rss_10k:
            twin.axhline(rss_10k * 1.1, color="tab:red", alpha=0.4, linewidth=1)
            twin.annotate("10,000-incident RSS + 10%", (0, rss_10k * 1.1), fontsize=7, color="tab:red")
        right.set_title("Archiving: objects and RSS")
    else:
        right.text(0.5, 0.5, "retention not available", ha="center", va="center")
        right.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def remaining_by_month(custom: client.CustomObjectsApi) -> tuple[Counter[str], int, int]:
    """Objects left by month of detection; how many closed more than KEEP_DAYS ago (plus an hour of
    slack for the pass under way); how many in all."""
    left: Counter[str] = Counter()
    stale = 0
    cutoff = datetime.now(UTC) - timedelta(days=KEEP_DAYS, hours=1)
    items = scale._list(custom, NS)
    for item in items:
        status = item.get("status") or {}
        left[str(status.get("detectedAt") or "")[:7]] += 1
        closed = status.get("closedAt")
        if closed and history.parse(str(closed)) < cutoff:
            stale += 1
    return left, stale, len(items)


def run(  # noqa: PLR0917 - one call site; one stage told in order
    custom: client.CustomObjectsApi,
    api: client.ApiClient,
    template: history.Template,
    start: Start,
    stop: Stop,
    port: int,
    base_config: dict[str, Any],
    rss_10k: float | None,
    root: Path,
    log: Path,
) -> str:
    if not ENABLED:
        return "\n## A simulated year\n\nSkipped (BENCH_YEAR=0).\n"
    stage_started = time.monotonic()
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))

    def ready() -> bool:  # the namespace's default ServiceAccount exists: it is usable
        try:
            core.read_namespaced_service_account("default", NS)
        except client.exceptions.ApiException:
            return False
        return True

    scale.poll(ready, 60, "namespace", interval=0.5)
    now = datetime.now(UTC)
    made = create_year(custom, template, now)
    months: Counter[str] = made["months"]
    month_names = sorted(m for m in months if m)
    token = reader_token(core, client.RbacAuthorizationV1Api(api))

    pid = start({})
    scale.settle(pid, limit=SETTLE_S)
    rss_all = scale.rss_mb(pid)
    before = reports(port, token, month_names)
    unread_before = [m for m in month_names if "error" in before[m]]
    read_before = [m for m in month_names if m not in unread_before]
    stop()

    work = Path(tempfile.mkdtemp(prefix="bench-year-"))
    retention, refusal = retention_config(work, base_config)
    installed = archive_kind_installed(client.ApiextensionsV1Api(api))
    lines = [
        "",
        "## A simulated year (retention)",
        "",
        "![incidents created and left per month of the simulated year; objects and RSS while "
        "archiving](bench-year.png)",
        "",
        f"{INCIDENTS:,} incidents of realistic history (the standing load's shape) created in `{NS}` by "
        f"{scale.THREADS} writers with their status written at once, `status.closedAt` spread evenly over "
        f"the twelve months before the run: {made['created_s']:.0f} s "
        f"({2 * INCIDENTS / made['created_s']:.0f} writes/s, a create and a status write each). "
        f"The operator, started on them (with the standing load's {scale.SIZES[-1]:,} in their own "
        f"namespace): RSS {rss_all:.0f} MB once settled. Its monthly reports of `{NS}` "
        f"(`/reports/YYYY-MM?namespace={NS}&format=json`): {len(read_before)} of {len(month_names)} "
        f"months read{'; unreadable: ' + ', '.join(unread_before) if unread_before else ''}.",
        "",
    ]
    samples: list[tuple[float, int, float]] = []
    if retention is None or not installed:
        why = (
            refusal
            if retention is None
            else f"the IncidentArchive kind (incidentarchives.{GROUP}) is not installed"
        )
        lines += [
            f"**Retention is not available on the code under test** ({why}): nothing archived or "
            "deleted; the objects stay, and so does their cost (the RSS above).",
        ]
        chart(root / "bench-year.png", months, months, samples, rss_10k)
    else:
        times: list[datetime] = made["times"]

        def expected() -> int:  # incidents closed within the last KEEP_DAYS, as of now
            cutoff = datetime.now(UTC) - timedelta(days=KEEP_DAYS)
            return sum(1 for t in times if t >= cutoff)

        began = LogMark(log, RETENTION_BEGAN)  # only what the log gains from here on counts
        ended = LogMark(log, RETENTION_ENDED)
        pid = start({"retention": retention})
        waited = wait_for_retention(custom, pid, expected, began, ended)
        samples = waited["samples"]
        settle_s = scale.settle(pid, limit=SETTLE_S)
        rss_after = scale.rss_mb(pid)
        after = reports(port, token, month_names)
        left, stale, total = remaining_by_month(custom)
        chart(root / "bench-year.png", months, left, samples, rss_10k)
        changed = [m for m in month_names if before.get(m) != after.get(m)]
        errors = [m for m in month_names if "error" in before.get(m, {}) or "error" in after.get(m, {})]
        rate = (INCIDENTS - total) / waited["seconds"] if waited["seconds"] else 0.0
        vs = (
            f"{100 * (rss_after / rss_10k - 1):+.0f}% against the standing load's {rss_10k:.0f} MB "
            f"at {scale.SIZES[-1]:,}"
            if rss_10k
            else "no standing-load figure to compare"
        )
        lines += [
            f"Restarted with `retention: {json.dumps(retention)}`: {waited['outcome']} after "
            f"{waited['seconds']:.0f} s ({rate:.0f} incidents archived and deleted per second).",
            "",
            "| | figure | goal |",
            "|---|---|---|",
            f"| incident objects left | {total:,} of {INCIDENTS:,} ({expected():,} closed within "
            f"{KEEP_DAYS} days) | at most the last {KEEP_DAYS} days' |",
            f"| objects closed more than {KEEP_DAYS} days (and an hour) ago still there | {stale:,} | 0 |",
            f"| monthly reports ({len(month_names)} months, JSON) changed by archiving | {len(changed)}"
            f"{': ' + ', '.join(changed) if changed else ''}"
            f"{'; unreadable: ' + ', '.join(errors) if errors else ''} | 0 |",
            f"| operator RSS once settled ({settle_s:.0f} s) | {rss_after:.0f} MB ({vs}) | within 10% |",
        ]
    lines += ["", f"The whole stage took {time.monotonic() - stage_started:.0f} s.", ""]
    return "\n".join(lines)

"""The scale part of `make bench`: many incidents on one operator.

1. Burst: N incidents (default 1,000) created at once by 16 client threads, each with a one-step
   `waitReady` playbook; how long until all are `Resolved`, against the write floor measured in
   the same run: a raw client with 16 writers making the same API writes (8 per incident: a
   create and seven status patches) for N incidents in a namespace the operator does not watch.
2. Standing load: incidents accumulate to 1k, 3k and 10k (BENCH_SCALE_SIZES): 90% realistic
   history (the spec and status of an incident of this run that ran a playbook, resolved and was
   closed by a person, see `history`), 10% open and waiting (paused); at each size, once every
   incident has been handled, the operator's RSS and its idle CPU over a quiet window.

Measures through /proc of the operator's PID. Returns Markdown and draws a chart (matplotlib).
"""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import history
from kubernetes import client

GROUP, VERSION = "incident-operator.dev", "v1alpha1"
THREADS = 16
FLOOR_NS = "bench-floor"
"""Where the write floor writes: a namespace the operator does not watch."""
BURST = int(os.environ.get("BENCH_BURST", "1000"))
SIZES = tuple(
    int(x)
    for x in os.environ.get("BENCH_SCALE_SIZES", os.environ.get("BENCH_SIZES", "1000,3000,10000")).split(",")
)
FLOOR_WRITES = 8
"""API writes of a one-step lifecycle the floor makes per incident: a create and seven patches."""
IDLE_WINDOW_S = float(os.environ.get("BENCH_IDLE_WINDOW", "30"))
TICKS = os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def settle(pid: int, limit: float = 180.0) -> float:
    """Let the operator finish the work already queued (watch events of its own writes) before
    measuring idle: 5 s windows until one stays under 10% of a core, at most `limit` seconds.
    Returns how long that took."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if idle_cpu_percent(pid, 5.0) < 10.0:
            break
    return time.monotonic() - started


def idle_cpu_percent(pid: int, window: float) -> float:
    before, started = cpu_seconds(pid), time.monotonic()
    deadline = started + window
    while time.monotonic() < deadline:  # a measurement window, not a synchronisation
        time.sleep(min(1.0, deadline - time.monotonic()))
    return 100.0 * (cpu_seconds(pid) - before) / (time.monotonic() - started)


def _incident(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Incident",
        "metadata": {"name": name},
        "spec": {"title": name, "severity": "P3", "category": "performance", **spec},
    }


def poll(check: Any, timeout: float, what: str, interval: float = 2.0) -> Any:
    """Call `check` every `interval` seconds until it returns something truthy (listing 10,000
    incidents is not free: a slow poll keeps the measurement from loading the API server)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise SystemExit(f"bench: timed out waiting for {what}")


def _in_parallel(items: list[Any], fn: Any) -> None:
    with ThreadPoolExecutor(THREADS) as pool:
        for _ in pool.map(fn, items):
            pass


def _list(custom: client.CustomObjectsApi, ns: str) -> list[dict[str, Any]]:
    """Every incident of `ns`, in pages of 2,000. A continue token that expired meanwhile (a page
    slower than etcd's compaction: 100,000 incidents while retention deletes) goes on with the
    token the API server's 410 offers, from its latest snapshot: the bench counts, and an object
    changed between two pages may be counted in either state."""
    items: list[dict[str, Any]] = []
    token = None
    while True:
        try:
            page = cast(
                dict[str, Any],
                custom.list_namespaced_custom_object(
                    GROUP, VERSION, ns, "incidents", limit=2000, _continue=token
                ),
            )
        except client.ApiException as exc:
            offered = _offered_continue(exc)
            if exc.status != 410 or not token or not offered:
                raise
            token = offered
            continue
        items += page["items"]
        token = page["metadata"].get("continue")
        if not token:
            return items


def _offered_continue(exc: client.ApiException) -> str | None:
    """The continue token a 410 Expired answer offers (its `metadata.continue`), if any."""
    try:
        return str(json.loads(exc.body or "{}").get("metadata", {}).get("continue") or "") or None
    except (ValueError, AttributeError):
        return None


def write_floor(custom: client.CustomObjectsApi, ns: str) -> float:
    """Seconds a raw client with THREADS writers needs for the writes of BURST one-step lifecycles
    (FLOOR_WRITES each: a create and merge patches of the status, as the operator's are) in `ns`,
    which the operator does not watch: the floor the burst is measured against."""

    def lifecycle(name: str) -> None:
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, "incidents", _incident(name))
        timeline: list[dict[str, str]] = []
        for step in range(FLOOR_WRITES - 1):
            timeline.append({"time": f"2026-01-01T00:00:{step:02d}Z", "type": f"Step{step}", "message": name})
            body = {"status": {"phase": "Detected", "timeline": timeline}}
            custom.patch_namespaced_custom_object_status(GROUP, VERSION, ns, "incidents", name, body)

    started = time.monotonic()
    _in_parallel([f"f{i:05d}" for i in range(BURST)], lifecycle)
    return time.monotonic() - started


def burst(custom: client.CustomObjectsApi, apps: client.AppsV1Api, ns: str, wait: Any) -> dict[str, float]:
    """N incidents at once, each with a one-step waitReady playbook: all Resolved how soon?"""
    labels = {"app": "steady"}
    pod = client.V1PodSpec(containers=[client.V1Container(name="c", image="x:1")])
    apps.create_namespaced_deployment(
        ns,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="steady"),
            spec=client.V1DeploymentSpec(
                replicas=1,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels=labels), spec=pod),
            ),
        ),
    )
    step = {"name": "wait", "waitReady": {"target": {"kind": "Deployment", "name": "steady"}}}
    custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        ns,
        "playbooks",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Playbook",
            "metadata": {"name": "steady"},
            "spec": {"stabilizationSeconds": 0, "steps": [step]},
        },
    )

    def steady_ready() -> bool:
        status = apps.read_namespaced_deployment("steady", ns).status
        return status is not None and (status.ready_replicas or 0) == 1

    wait(steady_ready, 60, "steady ready")
    names = [f"b{i:05d}" for i in range(BURST)]
    started = time.monotonic()
    _in_parallel(
        names, lambda n: custom.create_namespaced_custom_object(GROUP, VERSION, ns, "incidents", _incident(n))
    )
    created = time.monotonic() - started

    def all_resolved() -> list[dict[str, Any]] | None:
        items = _list(custom, ns)
        done = [i for i in items if (i.get("status") or {}).get("phase") == "Resolved"]
        return items if len(done) == BURST else None

    items = poll(all_resolved, 1800, f"{BURST} incidents Resolved", interval=0.5)
    finished = time.monotonic() - started
    slowest = 0.0
    for item in items:
        status = item["status"]
        created_at = datetime.fromisoformat(item["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
        resolved_at = datetime.fromisoformat(str(status["resolvedAt"]).replace("Z", "+00:00"))
        slowest = max(slowest, (resolved_at - created_at).total_seconds())
    floor = write_floor(custom, FLOOR_NS)  # after the burst: the operator is idle again
    return {"created_s": created, "resolved_s": finished, "slowest_s": slowest, "floor_s": floor}


def standing(
    custom: client.CustomObjectsApi, ns: str, pid: int, template: history.Template
) -> list[dict[str, float]]:
    """Grow to each size (90% realistic history, 10% paused and open); RSS and idle CPU at each."""
    results = []
    made = 0

    def open_one(name: str) -> None:
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, "incidents", _incident(name, paused=True))

    for size in SIZES:
        new = list(range(made, size))
        opened = [f"o{i:05d}" for i in new if i % 10 == 0]
        past = [f"h{i:05d}" for i in new if i % 10 != 0]
        _in_parallel(past, lambda name: history.create(custom, ns, template, name))
        _in_parallel(opened, open_one)
        made = size

        def seen(size: int = size) -> bool:  # every incident handled: history Closed, open ones Paused
            paused = closed = 0
            for item in _list(custom, ns):
                status = item.get("status") or {}
                closed += status.get("phase") == "Closed"
                paused += any(
                    c["type"] == "Reconciling" and c["reason"] == "Paused"
                    for c in status.get("conditions") or []
                )
            return paused == size // 10 and closed == size - size // 10

        poll(seen, 1800, f"{size} incidents handled")
        # The operator has closed them (Detected, Closed): now their real history, as the admin.
        _in_parallel(past, lambda name: history.write_status(custom, ns, template, name))
        settled_s = settle(pid)
        results.append(
            {
                "incidents": size,
                "rss_mb": rss_mb(pid),
                "idle_cpu": idle_cpu_percent(pid, IDLE_WINDOW_S),
                "settle_s": settled_s,
            }
        )

    return results


def chart(path: Path, standing_results: list[dict[str, float]], burst_result: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["incidents"] for r in standing_results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(sizes, [r["rss_mb"] for r in standing_results], "o-", label="RSS (MB)")
    left.set_xlabel("incidents in the cluster (90% realistic closed history)")
    left.set_ylabel("operator RSS, MB")
    twin = left.twinx()
    twin.plot(sizes, [r["idle_cpu"] for r in standing_results], "s--", color="tab:red", label="idle CPU (%)")
    twin.set_ylabel("idle CPU, % of one core")
    left.set_title("Standing load")
    left.grid(alpha=0.3)
    right.bar(
        ["write floor\n(raw client, same writes)", "all Resolved", "slowest incident"],
        [burst_result["floor_s"], burst_result["resolved_s"], burst_result["slowest_s"]],
        color=["tab:gray", "tab:blue", "tab:orange"],
    )
    right.set_ylabel("seconds")
    right.set_title(f"{BURST} incidents created at once (one-step playbook)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(
    standing_results: list[dict[str, float]],
    burst_result: dict[str, float],
    chart_name: str,
    template: history.Template,
) -> str:
    rows = "\n".join(
        f"| {int(r['incidents']):,} | {r['rss_mb']:.0f} MB | {r['idle_cpu']:.1f}% | {r['settle_s']:.0f} s |"
        for r in standing_results
    )
    ratio = burst_result["resolved_s"] / burst_result["floor_s"]
    writes = FLOOR_WRITES * BURST
    return f"""
## Scale: one operator, many incidents

![RSS and idle CPU against incidents; burst resolve time]({chart_name})

Where the time and memory go, and what the goals not met yet would need:
[docs/operations/scale.md](docs/operations/scale.md), with the allocation profile at 10,000
incidents in [docs/operations/memory-profile.txt](docs/operations/memory-profile.txt)
(`BENCH_MEMORY_PROFILE=1 make bench`).

**Burst.** {BURST} incidents created at once by {THREADS} client threads, each with a one-step
`waitReady` playbook (`stabilizationSeconds: 0`): all were `Resolved`
{burst_result["resolved_s"]:.1f} s after the first create, against a **write floor of
{burst_result["floor_s"]:.1f} s** measured in the same run: a raw client with {THREADS} writers
making the same number of API writes ({FLOOR_WRITES} per incident, a create and seven status
patches: {writes:,} writes) into a namespace the operator does not watch. **{ratio:.1f}x the floor**
(goal: at most 1.5x, issue 22). For comparison only, the client needed
{burst_result["created_s"]:.1f} s for the {BURST} creates alone. The slowest incident took
{burst_result["slowest_s"]:.1f} s from its creation to `Resolved` (API server timestamps).

**Standing load.** Incidents accumulate in one namespace: 90% realistic history, 10% open and
waiting (paused). The history is the shape of a real incident of this run ({template.name}: it
ran its one-step `scale` playbook, resolved, and was closed by the bench as a person closes one,
`spec.closed`): each history incident is created closed with its spec, and once the operator has
handled it, its status ({template.size():,} bytes of JSON: timeline, steps, conditions,
post-mortem reference, as the operator wrote them) is written by the bench's admin client. At each
size, once every incident has been handled and the operator's CPU has settled (5 s windows
until one stays under 10%, at most 180 s; how long that took is in the last column): its RSS
and its CPU over a {IDLE_WINDOW_S:.0f} s quiet window (goal at 10,000: at most 200 MB and 5%).

| incidents | operator RSS | idle CPU (% of one core) | busy after the last write (settling) |
|---|---|---|---|
{rows}
"""


def exited(pid: int) -> bool:
    """Gone, or a zombie waiting for its parent (the bench) to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def sigterm_without_api_server(pid: int, apiserver_pid: int) -> float:
    """Freeze the API server (SIGSTOP), SIGTERM the operator, time its exit; thaw the API server."""
    os.kill(apiserver_pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        poll(lambda: exited(pid), 120, "the operator to exit", interval=0.1)
        return time.monotonic() - started
    finally:
        os.kill(apiserver_pid, signal.SIGCONT)


def run(  # noqa: PLR0917 - one call site
    custom: client.CustomObjectsApi,
    apps: client.AppsV1Api,
    pid: int,
    wait: Any,
    root: Path,
    apiserver_pid: int,
    template: history.Template,
) -> tuple[str, list[dict[str, float]]]:
    """Burst, standing load, then SIGTERM with the API server frozen (the operator exits)."""
    burst_result = burst(custom, apps, "bench-burst", wait)
    standing_results = standing(custom, "bench-scale", pid, template)
    chart(root / "bench-scale.png", standing_results, burst_result)
    exit_s = sigterm_without_api_server(pid, apiserver_pid)
    return (
        render(standing_results, burst_result, "bench-scale.png", template)
        + f"""
**SIGTERM with {SIZES[-1]:,} incidents and the API server frozen** (SIGSTOP, so every request
hangs): the operator exited {exit_s:.1f} s after SIGTERM (goal: within 15 s, Kubernetes' default
grace period is 30 s).
""",
        standing_results,
    )

"""A watch of one of the operator's kinds in one scope, its first state first, handed on one event at a time.

Owns the stream of Incident events the incident loops and the indexes read, instead of kopf's
watch. kopf keeps a worker task, a queue and a memory for every object it has seen, and queues a
listing's or a burst's bodies faster than its workers handle them: at 10,000 incidents with a
realistic history that is hundreds of megabytes of decoded bodies held at once, and an allocator
that keeps the peak. Here nothing is held but what the callback keeps: each event is decoded and
handed to a synchronous callback in the order the API server sent it, and the next one is read
only when the callback returned. What this module keeps of an object is its uid and namespace
(to say which ones went away when the watch had to list again).

One `ObjectWatch` per scope (a namespace, or the cluster). Its first state comes as a stream
(a watch with `sendInitialEvents=true&resourceVersionMatch=NotOlderThan`: the API server's watch
cache sends every object as an ADDED event, handed on as type None like a listing's, then a
bookmark annotated `k8s.io/initial-events-end` at the state's resourceVersion, and the same
connection goes on with the changes). No continue token can expire: a paged listing of 100,000
objects took longer than etcd's compaction while they were deleted, and never finished. An API
server that refuses the stream (400 or 422: older than 1.27, or its WatchList feature off; or a
plain bookmark before the end: it ignored the ask) gets a paged listing instead from then on (one
consistent snapshot, LIST_PAGE objects per request, handed on as type None), then a watch from
the snapshot's resourceVersion. A stream that ends before its end (a restart of the API server, a
proxy's limit) is tried again after a delay; after EARLY_ENDS_BEFORE_PAGING such ends in a row
the first state is listed in pages once.
Every watch has bookmarks and is re-established every WATCH_SERVER_TIMEOUT_S from the last
resourceVersion seen. A watch the API server answers with 410 Gone (its history compacted past our
resourceVersion) takes the first state again; the objects it lacks are handed on as DELETED.
A broken connection, a timeout or an API error is retried after a growing delay (RETRY_DELAYS_S),
from the last resourceVersion, for as long as the watch runs: it ends only when cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from incident_operator.adapters.kube import ApiException, Kube, TransportError
from incident_operator.api.keys import API_GROUP, API_VERSION

logger = logging.getLogger(__name__)

LIST_PAGE = 500
"""Objects per listing request: a caller that keeps a few facts of each holds one page at most."""
WATCH_SERVER_TIMEOUT_S = 300
"""The API server ends each watch after this long; it is re-established from the last version."""
WATCH_READ_TIMEOUT_S = 330
"""No byte in this long (bookmarks come about every minute) and the connection is taken as broken."""
CONNECT_TIMEOUT_S = 10
LIST_TIMEOUT_S = 60
"""One page of the listing, answered within this long."""
RETRY_DELAYS_S = (1.0, 2.0, 5.0, 10.0, 30.0)
"""Waits before the next try after consecutive failures (the last one repeats)."""
INITIAL_STREAM_TIMEOUT_S = 1800
"""A watch that streams the first state may last this long (its objects are handed on one at a
time, so a large scope takes longer than WATCH_SERVER_TIMEOUT_S; the changes follow on it)."""
INITIAL_EVENTS_END = "k8s.io/initial-events-end"
"""The annotation of the bookmark that ends a streamed first state."""
REFUSED = (400, 422)
"""How an API server that does not stream a first state answers the request for one."""
EARLY_ENDS_BEFORE_PAGING = 3
"""Streams of a first state that ended or broke before its end, in a row, before one is listed
in pages."""
QUICK_END_S = 1.0
"""A watch that ends sooner than this with no event counts as a failure (the next waits)."""
MAX_EVENT_BYTES = 16 * 1024 * 1024
"""One watch event's JSON line at most (etcd stores objects up to 1.5 MiB): a longer line is a
broken stream, and the watch is established again."""

EventHandler = Callable[[str | None, dict[str, Any]], None]
"""Called with each event's type (None: in a listing; ADDED, MODIFIED, DELETED) and object."""


class Gone(Exception):
    """The watch's resourceVersion is too old (410): the scope must be listed again."""


class WatchError(Exception):
    """The API server ended the watch with an error other than 410, or sent what is not an event."""


class Refused(Exception):
    """The API server does not stream a first state (it refused, or ended it before its end)."""


class ObjectWatch:
    """Take the first state of objects of `plural` in `namespace` (None: the cluster), then watch
    them, handing every event to `on_event` in order; `on_synced` is called after every complete
    first state (the objects it lacked have been handed on as DELETED by then). First states of
    several watches that share `listing` (a lock) are taken one at a time. `stream` False: a paged
    listing from the start (the API server is known not to stream)."""

    def __init__(
        self,
        kube: Kube,
        plural: str,
        namespace: str | None,
        on_event: EventHandler,
        *,
        on_synced: Callable[[], None] | None = None,
        listing: asyncio.Lock | None = None,
        page: int = LIST_PAGE,
        server_timeout: int = WATCH_SERVER_TIMEOUT_S,
        retry_delays: tuple[float, ...] = RETRY_DELAYS_S,
        stream: bool = True,
    ) -> None:
        self.kube = kube
        self.plural = plural
        self.namespace = namespace
        self.on_event = on_event
        self.on_synced = on_synced
        self.listing = listing or asyncio.Lock()
        self.page = page
        self.server_timeout = server_timeout
        self.retry_delays = retry_delays
        self.stream = stream
        """Whether the first state is asked for as a stream (False once the API server refused)."""
        self.streamed: set[str] | None = None
        """The uids a first state being streamed has handed on so far (None: not streaming one)."""
        self.streamed_before: set[str] = set()
        """What was known when the stream of a first state began: what it lacks is gone."""
        self.early_ends = 0
        """Streams of a first state that ended before their end, in a row."""
        self.synced_mark: tuple[float, str] | None = None
        """When, and at which version, the last streamed first state ended (what counts as
        progress after it: a change or time, not the first state itself)."""
        self.known: dict[str, str] = {}
        """uid -> namespace of every object handed on (or `remember`ed) and not deleted since."""
        self.version: str | None = None
        """The resourceVersion the next watch starts from: the last one seen (None: list first)."""
        self.delays: deque[float] = deque(maxlen=16)
        """The last waits before a next try (what the log says; the tests read it)."""

    @property
    def scope(self) -> str:
        return f"{self.plural} in {self.namespace}" if self.namespace else f"{self.plural} cluster-wide"

    def remember(self, body: Mapping[str, Any]) -> None:
        """An object of this scope seen elsewhere first (the intake's create): if a listing after a
        410 lacks it, it is handed on as DELETED like the others."""
        metadata = body.get("metadata") or {}
        uid = str(metadata.get("uid") or "")
        if uid:
            self.known.setdefault(uid, sys.intern(str(metadata.get("namespace") or "")))

    async def run(self) -> None:
        """Keep the stream going until cancelled."""
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            started, before = loop.time(), self.version
            self.synced_mark = None
            progressed: bool | None = None  # decided before what failed resets the version
            try:
                if self.version is None and (not self.stream or self.early_ends >= EARLY_ENDS_BEFORE_PAGING):
                    async with self.listing:
                        self.version = await self._list()
                    self.early_ends = 0
                    started, before = loop.time(), self.version
                await self._watch()
                if self._progressed(started, before):
                    failures = 0
                    continue
                # Ended at once with nothing in it (a proxy closing watches): not a busy loop.
                why = "the watch ended at once"
            except Gone:
                logger.info("watch of %s: version %s expired, listing again", self.scope, self.version)
                progressed = self._progressed(started, before)
                if progressed:
                    failures = 0
                self.version = None
                if not failures:  # the first 410 lists again at once; one after a fruitless
                    failures = 1  # listing (slower than etcd's compaction?) waits like an error
                    continue
                why = "410 Gone again"
            except Refused as exc:
                logger.info("watch of %s: %s; listing in pages from now on", self.scope, exc)
                self.stream = False
                continue
            except (ApiException, TransportError, OSError, TimeoutError, WatchError, ValueError) as exc:
                why = _why(exc)
            except Exception as exc:  # a bug here must not end the operator's watch of incidents
                logger.exception("watch of %s failed", self.scope)
                why = _why(exc)
            if progressed is None:
                progressed = self._progressed(started, before)
            if progressed:
                failures = 0  # a watch that worked for a while, then broke: the delays start over
            delay = self.retry_delays[min(failures, len(self.retry_delays) - 1)]
            failures += 1
            self.delays.append(delay)
            logger.warning(
                "watch of %s broke (%s); again from %s in %.0fs", self.scope, why, self.version, delay
            )
            await asyncio.sleep(delay)

    def _progressed(self, started: float, before: str | None) -> bool:
        """Whether the watch since `started` saw an event or lasted a while: what went wrong after
        that is a new failure, not one more of a series (the delays start over). After a first
        state streamed to its end, from that end: a 410 right after it is no progress."""
        if before is None and self.synced_mark is not None:
            started, before = self.synced_mark
        elapsed = asyncio.get_running_loop().time() - started
        return before is not None and (self.version != before or elapsed >= QUICK_END_S)

    def _hand_on(self, event_type: str | None, body: dict[str, Any]) -> None:
        metadata = body.get("metadata") or {}
        uid = str(metadata.get("uid") or "")
        if event_type == "DELETED":
            self.known.pop(uid, None)
        elif uid:
            self.known[uid] = sys.intern(str(metadata.get("namespace") or ""))
        try:
            self.on_event(event_type, body)
        except Exception:  # one event the handler fails on must not end the stream of the others
            logger.exception("watch of %s: handling %s of %s failed", self.scope, event_type, uid)

    async def _list(self) -> str:
        """One consistent listing, a page at a time; returns its resourceVersion. A continue token
        that expired meanwhile starts the listing over (`Gone`): going on from another snapshot
        could miss an object that the watch from the new version would not show either."""
        before = set(self.known)
        listed: set[str] = set()
        token: str | None = None
        version = ""
        while True:
            query: dict[str, Any] = {"limit": self.page, **({"_continue": token} if token else {})}
            try:
                found = await self.kube.call(self._list_call(), **query, _request_timeout=LIST_TIMEOUT_S)
            except ApiException as exc:
                if exc.status == 410 and token is not None:
                    raise Gone from exc
                raise
            metadata = found.get("metadata") or {}
            version = version or str(metadata.get("resourceVersion") or "")
            for item in found.get("items") or []:
                item.setdefault("apiVersion", f"{API_GROUP}/{API_VERSION}")
                item.setdefault("kind", found.get("kind", "List").removesuffix("List"))
                listed.add(str((item.get("metadata") or {}).get("uid") or ""))
                self._hand_on(None, item)
            del found  # the raw page: `Kube.call` keeps no copy of it either
            token = metadata.get("continue") or None
            if token is None:
                break
        if not version:
            raise WatchError("the listing carried no resourceVersion")
        self._complete(before - listed)
        return version

    def _complete(self, missing: set[str]) -> None:
        """A first state is complete: hand on what it lacked (`missing`: uids) as DELETED, then
        say so (`on_synced`)."""
        for uid in missing:
            self._hand_on("DELETED", _gone(uid, self.known.get(uid, "")))
        if self.on_synced is not None:
            try:
                self.on_synced()
            except Exception:  # the watch goes on from this state whatever the handler does
                logger.exception("watch of %s: handling its first state failed", self.scope)

    def _path(self) -> str:
        base = f"/apis/{API_GROUP}/{API_VERSION}"
        return (
            f"{base}/namespaces/{self.namespace}/{self.plural}" if self.namespace else f"{base}/{self.plural}"
        )

    def _list_call(self) -> Callable[..., Any]:
        api, namespace, plural = self.kube.objects.api, self.namespace, self.plural
        if namespace is None:

            def cluster(**query: Any) -> Any:
                return api.list_cluster_custom_object(API_GROUP, API_VERSION, plural, **query)

            return cluster
        scoped: str = namespace

        def namespaced(**query: Any) -> Any:
            return api.list_namespaced_custom_object(API_GROUP, API_VERSION, scoped, plural, **query)

        return namespaced

    async def _watch(self) -> None:
        """One watch from `self.version` (None: streaming the first state first, the `listing`
        lock held until its end) until the API server ends it or it breaks; every event and
        bookmark past the first state moves `self.version`, so the next watch goes on from the
        last one seen."""
        initial = self.version is None
        if initial:
            await self.listing.acquire()
            self.streamed, self.streamed_before = set(), set(self.known)
        try:
            await self._stream(initial)
            if self.streamed is not None:  # a restart of the API server, a proxy's limit: again
                raise WatchError("the stream of the first state ended before its end")
        except (Gone, Refused, asyncio.CancelledError):
            raise
        except BaseException:
            if self.streamed is not None:  # broke before its end: counts towards a paged listing
                self.early_ends += 1
            raise
        finally:
            if self.streamed is not None:
                self.streamed, self.streamed_before = None, set()
                self.listing.release()

    async def _stream(self, initial: bool) -> None:
        timeout = aiohttp.ClientTimeout(
            connect=CONNECT_TIMEOUT_S, sock_connect=CONNECT_TIMEOUT_S, sock_read=WATCH_READ_TIMEOUT_S
        )
        query: list[tuple[str, Any]] = [("watch", "true"), ("allowWatchBookmarks", "true")]
        if initial:
            query += [("sendInitialEvents", "true"), ("resourceVersionMatch", "NotOlderThan")]
            query.append(("timeoutSeconds", max(self.server_timeout, INITIAL_STREAM_TIMEOUT_S)))
        else:
            query += [("resourceVersion", self.version), ("timeoutSeconds", self.server_timeout)]
        response = await self.kube.api.call_api(
            self._path(),
            "GET",
            query_params=query,
            header_params={"Accept": "application/json;stream=watch"},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=timeout,
        )
        try:
            if response.status == 410:
                raise Gone
            if response.status != 200:
                text = (await response.content.read(4096)).decode(errors="replace")
                if initial and response.status in REFUSED:
                    raise Refused(f"HTTP {response.status} to a stream of the first state: {_message(text)}")
                raise ApiException(status=response.status, reason=f"{response.reason}: {_message(text)}")
            pending = b""
            async for chunk in response.content.iter_any():
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                for line in (*lines, pending):
                    if len(line) > MAX_EVENT_BYTES:
                        raise WatchError(f"a watch event longer than {MAX_EVENT_BYTES} bytes")
                for line in lines:
                    if line.strip():
                        self._event(line)
            if pending.strip():
                self._event(pending)
        finally:
            response.release()

    def _event(self, line: bytes) -> None:
        """Hand on one watch event and move `self.version` past it (in a first state being
        streamed: hand on its objects as listed; its end bookmark completes it)."""
        event = json.loads(line)
        if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
            raise WatchError(f"a watch line that is not an event: {line[:100]!r}")
        event_type, body = event.get("type"), event["object"]
        metadata = body.get("metadata") or {}
        streamed = self.streamed
        if event_type == "ERROR":
            if body.get("code") == 410:
                raise Gone
            message = f"HTTP {body.get('code')} {body.get('reason')}: {_message(body.get('message'))}"
            if streamed is not None and body.get("code") in REFUSED:
                raise Refused(f"{message} (in a stream of the first state)")
            raise WatchError(message)
        if streamed is not None:
            uid = str(metadata.get("uid") or "")
            if event_type in ("ADDED", "MODIFIED"):  # part of the first state, as listed
                streamed.add(uid)
                self._hand_on(None, body)
            elif event_type == "DELETED":  # said now: not again when the first state is complete
                streamed.discard(uid)
                self.streamed_before.discard(uid)
                self._hand_on("DELETED", body)
            elif event_type == "BOOKMARK":
                if (metadata.get("annotations") or {}).get(INITIAL_EVENTS_END) != "true":
                    raise Refused("a bookmark before the end of the first state (the ask was ignored)")
                version = str(metadata.get("resourceVersion") or "")
                if not version:
                    raise WatchError("the end of the first state carried no resourceVersion")
                self.version, self.streamed, self.early_ends = version, None, 0
                self.synced_mark = (asyncio.get_running_loop().time(), version)
                self.listing.release()
                self._complete(self.streamed_before - streamed)
                self.streamed_before = set()
            return
        if event_type in ("ADDED", "MODIFIED", "DELETED"):
            self._hand_on(str(event_type), body)
        self.version = str(metadata.get("resourceVersion") or "") or self.version


def _gone(uid: str, namespace: str) -> dict[str, Any]:
    """What a DELETED event the watch missed carries: enough to forget the object (no name)."""
    return {"apiVersion": f"{API_GROUP}/{API_VERSION}", "metadata": {"uid": uid, "namespace": namespace}}


def _message(text: object) -> str:
    """The first line of an API error's message, at most 200 characters (no bodies in the log)."""
    if isinstance(text, str) and text.startswith("{"):
        with contextlib.suppress(ValueError, AttributeError):
            text = json.loads(text).get("message")
    return str(text or "").splitlines()[0][:200] if text else ""


def _why(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"[:200]

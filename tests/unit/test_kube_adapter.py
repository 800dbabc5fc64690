"""The adapter's own-kinds calls reach the client with the group, version and plural, and with the
request timeout every operator call carries (the client's methods take it as `_request_timeout`).
The client's methods are coroutines (`kubernetes_asyncio`): the stand-ins answer as coroutines too."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest
from kubernetes_asyncio import client

from incident_operator.adapters.kube import REQUEST_TIMEOUT_S, Kube, expired_continue
from incident_operator.api.keys import API_GROUP, API_VERSION, SECRET_HOSTS_ANNOTATION, SECRET_SHARED_LABEL
from tests.polling import until


class RecordingCustomObjectsApi:
    """Stands in for the client's CustomObjectsApi: records every call, answers like the API."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, method: str) -> Any:
        async def call(*args: Any, **kwargs: Any) -> dict[str, Any]:
            self.calls.append((method, args, kwargs))
            return {"items": [{"metadata": {"name": "a"}}], "metadata": {}}

        return call


async def offline_kube() -> Kube:
    """A Kube whose client never sends (its groups are replaced); made in a loop, as its session is."""
    return Kube(client.ApiClient())


@pytest.fixture
def kube() -> Any:
    k = asyncio.run(offline_kube())
    k.objects.api = RecordingCustomObjectsApi()  # type: ignore[assignment]
    yield k
    asyncio.run(k.close())


@pytest.mark.parametrize(
    ("call", "method", "args"),
    [
        (
            lambda k: k.get_object("incidents", "ns", "x"),
            "get_namespaced_custom_object",
            ("ns", "incidents", "x"),
        ),
        (
            lambda k: k.create_object("incidents", "ns", {}),
            "create_namespaced_custom_object",
            ("ns", "incidents", {}),
        ),
        (
            lambda k: k.patch_object("incidents", "ns", "x", {"m": 1}),
            "patch_namespaced_custom_object",
            ("ns", "incidents", "x", {"m": 1}),
        ),
        (
            lambda k: k.patch_object_status("drills", "ns", "d", {"status": {}}),
            "patch_namespaced_custom_object_status",
            ("ns", "drills", "d", {"status": {}}),
        ),
        (
            lambda k: k.patch_incident_status("ns", "x", {"phase": "Resolved"}),
            "patch_namespaced_custom_object_status",
            ("ns", "incidents", "x", {"status": {"phase": "Resolved"}}),
        ),
        (lambda k: k.get_playbook("ns", "pb"), "get_namespaced_custom_object", ("ns", "playbooks", "pb")),
        (
            lambda k: k.list_objects("incidents", "ns", label_selector="a=b"),
            "list_namespaced_custom_object",
            ("ns", "incidents"),
        ),
        (lambda k: k.list_incidents(None), "list_cluster_custom_object", ("incidents",)),
    ],
)
def test_every_own_kind_call_carries_the_group_version_plural_and_the_request_timeout(
    kube: Any, call: Any, method: str, args: tuple[Any, ...]
) -> None:
    asyncio.run(call(kube))
    ((called, got, options),) = kube.objects.api.calls
    assert called == method
    assert got == (API_GROUP, API_VERSION, *args)
    assert options["_request_timeout"] == REQUEST_TIMEOUT_S


class PagingCustomObjectsApi:
    """Answers a listing in two pages, linked by a continue token."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def list_namespaced_custom_object(self, *args: Any, **query: Any) -> dict[str, Any]:
        self.calls.append({"args": args, **query})
        if query.get("_continue") == "next":
            return {"items": [{"metadata": {"name": "c"}}], "metadata": {"continue": ""}}
        return {
            "items": [{"metadata": {"name": "a"}}, {"metadata": {"name": "b"}}],
            "metadata": {"continue": "next"},
        }


def test_incident_pages_reads_one_page_at_a_time_with_the_request_timeout(kube: Any) -> None:
    """A paged reader (retention, the reports) holds one page of bodies, never all."""
    kube.objects.api = PagingCustomObjectsApi()

    async def pages() -> list[list[str]]:
        return [[item["metadata"]["name"] for item in page] async for page in kube.incident_pages("ns", 2)]

    assert asyncio.run(pages()) == [["a", "b"], ["c"]]
    first, second = kube.objects.api.calls
    assert first["args"] == (API_GROUP, API_VERSION, "ns", "incidents")
    assert first["limit"] == 2
    assert "_continue" not in first
    assert second["_continue"] == "next"
    assert first["_request_timeout"] == second["_request_timeout"] == REQUEST_TIMEOUT_S


class RecordingGroup:
    """Stands in for one of the client's API groups (CoreV1Api, BatchV1Api, ...)."""

    def __init__(self, calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]], answer: Any) -> None:
        self.calls, self.answer = calls, answer

    def __getattr__(self, method: str) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((method, args, kwargs))
            return self.answer

        return call


class Listed:
    items = ("p1", "p2")


@pytest.mark.parametrize(
    ("call", "method", "args", "options", "result"),
    [
        (lambda k: k.delete_pod("ns", "p"), "delete_namespaced_pod", ("p", "ns"), {}, None),
        (lambda k: k.create_job("ns", {"j": 1}), "create_namespaced_job", ("ns", {"j": 1}), {}, None),
        (lambda k: k.read_job("ns", "j"), "read_namespaced_job", ("j", "ns"), {}, Listed),
        (
            lambda k: k.jobs_labelled("ns", "a"),
            "list_namespaced_job",
            ("ns",),
            {"label_selector": "a"},
            ["p1", "p2"],
        ),
        (
            lambda k: k.pods_labelled("ns", "job-name=j"),
            "list_namespaced_pod",
            ("ns",),
            {"label_selector": "job-name=j"},
            ["p1", "p2"],
        ),
        (
            lambda k: k.pods("ns", {"b": "2", "a": "1"}),
            "list_namespaced_pod",
            ("ns",),
            {"label_selector": "a=1,b=2"},
            ["p1", "p2"],
        ),
        (
            lambda k: k.pod_log("ns", "p", lines=5, limit_bytes=100),
            "read_namespaced_pod_log",
            ("p", "ns"),
            {"tail_lines": 5, "limit_bytes": 100, "_request_timeout": 10},
            str(Listed),
        ),
        (lambda k: k.events("ns"), "list_namespaced_event", ("ns",), {}, ["p1", "p2"]),
        (
            lambda k: k.pod_metrics("ns", "app=web"),
            "list_namespaced_custom_object",
            ("metrics.k8s.io", "v1beta1", "ns", "pods"),
            {"label_selector": "app=web", "_request_timeout": 10},
            Listed,
        ),
    ],
)
def test_every_other_call_of_the_adapter_reaches_the_client_as_it_did(  # noqa: PLR0917 - parametrized
    kube: Any, call: Any, method: str, args: tuple[Any, ...], options: dict[str, Any], result: Any
) -> None:
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
    group = RecordingGroup(calls, Listed)
    kube.core = kube.batch = kube.custom = group
    got = asyncio.run(call(kube))
    ((called, passed, kwargs),) = calls
    assert (called, passed) == (method, args)
    assert kwargs == {"_request_timeout": REQUEST_TIMEOUT_S, **options}
    assert got == result


def test_the_api_servers_endpoints_are_the_kubernetes_endpointslices_addresses(kube: Any) -> None:
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
    slices = client.V1EndpointSliceList(
        items=[
            client.V1EndpointSlice(
                address_type="IPv4",
                endpoints=[
                    client.V1Endpoint(addresses=["192.0.2.10"]),
                    client.V1Endpoint(addresses=["192.0.2.11"]),
                ],
            ),
            client.V1EndpointSlice(address_type="IPv6", endpoints=None),
        ]
    )
    kube.discovery = RecordingGroup(calls, slices)
    assert asyncio.run(kube.api_server_addresses()) == ["192.0.2.10", "192.0.2.11"]
    ((called, passed, kwargs),) = calls
    assert (called, passed) == ("list_namespaced_endpoint_slice", ("default",))
    assert kwargs == {"label_selector": "kubernetes.io/service-name=kubernetes", "_request_timeout": 10}


def test_a_secrets_values_are_decoded_and_stripped(kube: Any) -> None:
    class Secret:
        metadata = None
        data: ClassVar[dict[str, str]] = {"Authorization": "QmVhcmVyIHQK"}  # base64("Bearer t\n")

    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
    kube.core = RecordingGroup(calls, Secret)
    assert asyncio.run(kube.secret_data("ns", "creds")) == {"Authorization": "Bearer t"}
    assert calls[0][:2] == ("read_namespaced_secret", ("creds", "ns"))


def test_a_secret_is_read_with_the_labels_and_annotations_that_share_it(kube: Any) -> None:
    class Meta:
        labels: ClassVar[dict[str, str]] = {SECRET_SHARED_LABEL: "true"}
        annotations: ClassVar[dict[str, str]] = {SECRET_HOSTS_ANNOTATION: "hooks.example.com"}

    class Secret:
        metadata = Meta
        data: ClassVar[dict[str, str]] = {"url": "aHR0cHM6Ly9ob29rcy5leGFtcGxlLmNvbS94"}

    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
    kube.core = RecordingGroup(calls, Secret)
    seen = asyncio.run(kube.secret("ns", "hook"))
    assert seen.labels == {SECRET_SHARED_LABEL: "true"}
    assert seen.annotations == {SECRET_HOSTS_ANNOTATION: "hooks.example.com"}
    assert seen.data == {"url": "https://hooks.example.com/x"}
    assert "hooks.example.com/x" not in repr(seen)  # values never reach a log line through repr
    assert calls[0][:2] == ("read_namespaced_secret", ("hook", "ns"))


class ExpiringCustomObjectsApi:
    """Answers pages of one object each; the second page's token has expired (HTTP 410 with a
    token to go on inconsistently, as the API server answers once etcd compacted the revision)."""

    def __init__(self, first_page_expires: bool = False) -> None:
        self.tokens: list[str | None] = []
        self.first_page_expires = first_page_expires

    async def list_namespaced_custom_object(self, *args: Any, **query: Any) -> dict[str, Any]:
        token = query.get("_continue")
        self.tokens.append(token)
        if token is None and self.first_page_expires:
            raise client.ApiException(status=410, reason="Gone")
        if token == "t1":
            body = '{"kind": "Status", "reason": "Expired", "metadata": {"continue": "t1-latest"}}'
            raise client.ApiException(http_resp=Gone(body))
        following = {None: ("a", "t1"), "t1-latest": ("b", "t2"), "t2": ("c", None)}
        name, after = following[token]
        return {"items": [{"metadata": {"name": name}}], "metadata": {"continue": after} if after else {}}


class Gone:
    """The HTTP answer an ApiException is made from."""

    status, reason = 410, "Gone"

    def __init__(self, body: str) -> None:
        self.data = body.encode()

    def getheaders(self) -> dict[str, str]:
        return {}


def test_a_listing_whose_continue_token_expired_goes_on_from_the_latest_snapshot() -> None:
    async def scenario() -> tuple[list[str], list[str], list[str | None]]:
        kube = await offline_kube()
        api = ExpiringCustomObjectsApi()
        kube.objects.api = api  # type: ignore[assignment]
        paged = [o["metadata"]["name"] async for page in kube.pages("incidents", "ns", 1) for o in page]
        listed = [o["metadata"]["name"] for o in await kube.objects.list("incidents", "ns")]
        await kube.close()
        return paged, listed, api.tokens

    paged, listed, tokens = asyncio.run(scenario())
    assert paged == ["a", "b", "c"]  # nothing started over, nothing lost but what changed meanwhile
    assert listed == ["a", "b", "c"]
    assert tokens.count("t1-latest") == 2


def test_an_expiry_that_gives_back_the_same_token_is_an_error_not_a_loop() -> None:
    body = b'{"kind": "Status", "metadata": {"continue": "t1"}}'
    exc = client.ApiException(http_resp=Gone(body.decode()))
    with pytest.raises(client.ApiException):
        expired_continue(exc, "t1", "incidents")
    assert expired_continue(exc, "t0", "incidents") == "t1"
    with pytest.raises(client.ApiException):  # no token to go on with
        expired_continue(client.ApiException(http_resp=Gone("not json")), "t0", "incidents")


def test_a_first_page_that_is_gone_is_an_error_not_a_loop() -> None:
    async def scenario() -> None:
        kube = await offline_kube()
        kube.objects.api = ExpiringCustomObjectsApi(first_page_expires=True)  # type: ignore[assignment]
        try:
            with pytest.raises(client.ApiException) as raised:
                [page async for page in kube.pages("incidents", "ns", 1)]
            assert raised.value.status == 410
        finally:
            await kube.close()

    asyncio.run(scenario())


class LeaseGroup:
    """Stands in for CoordinationV1Api: one namespace's Leases, with the API's answers."""

    def __init__(self) -> None:
        self.leases: dict[str, str] = {}

    async def read_namespaced_lease(self, name: str, namespace: str, **_: Any) -> Any:
        if name not in self.leases:
            raise client.ApiException(status=404, reason="Not Found")
        return client.V1Lease(
            metadata=client.V1ObjectMeta(name=name, resource_version="7"),
            spec=client.V1LeaseSpec(holder_identity=self.leases[name]),
        )

    async def create_namespaced_lease(self, namespace: str, body: dict[str, Any], **_: Any) -> None:
        name = body["metadata"]["name"]
        if name in self.leases:
            raise client.ApiException(status=409, reason="AlreadyExists")
        self.leases[name] = body["spec"]["holderIdentity"]

    async def delete_namespaced_lease(self, name: str, namespace: str, **_: Any) -> None:
        if name not in self.leases:
            raise client.ApiException(status=404, reason="Not Found")
        del self.leases[name]


def test_a_lock_lease_is_seen_once_read_created_or_refused_as_there_and_unseen_once_gone(kube: Any) -> None:
    leases = kube.coordination = LeaseGroup()

    async def scenario() -> None:
        assert not kube.lock_seen("ns", "a")
        await kube.write_lock("ns", "a", "me", None)  # created
        assert kube.lock_seen("ns", "a")
        assert not kube.lock_seen("other", "a")  # per namespace
        await kube.write_lock("ns", "a", None, "7")  # deleted
        assert not kube.lock_seen("ns", "a")
        leases.leases["b"] = "someone"
        with pytest.raises(client.ApiException):
            await kube.write_lock("ns", "b", "me", None)  # already there
        assert kube.lock_seen("ns", "b")
        del leases.leases["b"]
        assert await kube.read_lock("ns", "b") == (None, None)  # gone behind our back
        assert not kube.lock_seen("ns", "b")
        leases.leases["c"] = "someone"
        assert await kube.read_lock("ns", "c") == ("someone", "7")
        assert kube.lock_seen("ns", "c")

    asyncio.run(scenario())


class ReviewGroup:
    """Stands in for AuthorizationV1Api: answers each SelfSubjectAccessReview once every review
    asked is in flight (so reviews asked one after another would never be answered), allowing
    all but `denied` verbs and failing for `failing` ones."""

    def __init__(self, expected: int, denied: set[str], failing: frozenset[str] = frozenset()) -> None:
        self.expected, self.denied, self.failing = expected, denied, failing
        self.asked: list[str] = []
        self.all_in = asyncio.Event()

    async def create_self_subject_access_review(self, body: dict[str, Any], **_: Any) -> Any:
        verb = body["spec"]["resourceAttributes"]["verb"]
        self.asked.append(verb)
        if len(self.asked) == self.expected:
            self.all_in.set()
        await asyncio.wait_for(self.all_in.wait(), timeout=5)
        if verb in self.failing:
            raise client.ApiException(status=500, reason="Internal Server Error")
        return client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(),
            status=client.V1SubjectAccessReviewStatus(allowed=verb not in self.denied),
        )


def test_access_reviews_not_cached_are_asked_at_once_and_answered_in_order(kube: Any) -> None:
    from incident_operator.adapters.kube import AccessReviews
    from incident_operator.core.access import Permission

    wanted = [
        Permission("patch", "deployments", "apps"),
        Permission("delete", "pods"),
        Permission("get", "pods"),
    ]
    reviews = AccessReviews(kube)
    reviews.authz = group = ReviewGroup(expected=3, denied={"delete"})  # type: ignore[assignment]

    async def scenario() -> None:
        assert await reviews.denied("ns", wanted, now=0.0) == [wanted[1]]
        assert await reviews.denied("ns", wanted, now=1.0) == [wanted[1]]  # cached: not asked again

    asyncio.run(scenario())
    assert sorted(group.asked) == ["delete", "get", "patch"]


def test_a_failed_access_review_raises_after_the_others_answered_and_they_stay_cached(kube: Any) -> None:
    from incident_operator.adapters.kube import AccessReviews
    from incident_operator.core.access import Permission

    wanted = [Permission("patch", "deployments", "apps"), Permission("delete", "pods")]
    reviews = AccessReviews(kube)
    reviews.authz = group = ReviewGroup(expected=2, denied=set(), failing=frozenset({"delete"}))  # type: ignore[assignment]

    async def scenario() -> None:
        with pytest.raises(client.ApiException):
            await reviews.denied("ns", wanted, now=0.0)
        assert await reviews.allowed("ns", wanted[0], now=1.0)  # answered, cached: not asked again

    asyncio.run(scenario())
    assert group.asked == ["patch", "delete"]


def test_a_review_in_flight_is_shared_by_who_asks_meanwhile_and_asked_again_if_its_asker_went(
    kube: Any,
) -> None:
    from incident_operator.adapters.kube import AccessReviews
    from incident_operator.core.access import Permission

    wanted = [Permission("patch", "deployments", "apps"), Permission("delete", "pods")]
    reviews = AccessReviews(kube)
    reviews.authz = group = ReviewGroup(expected=2, denied={"delete"})  # type: ignore[assignment]

    async def scenario() -> None:
        # three incidents of a namespace plan at once: two reviews asked, not six
        answers = await asyncio.gather(*(reviews.denied("ns", wanted, now=0.0) for _ in range(3)))
        assert answers == [[wanted[1]]] * 3
        assert sorted(group.asked) == ["delete", "patch"]
        # the one asking is cancelled: who waited for it asks itself
        group.asked.clear()
        group.all_in.clear()
        group.expected = 2
        first = asyncio.create_task(reviews.allowed("ns", wanted[0], now=100.0))
        second = asyncio.create_task(reviews.allowed("ns", wanted[0], now=100.0))
        await until(lambda: bool(group.asked), timeout=5, what="the first review in flight")
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await second  # its own review is the second asked: both answered then
        assert group.asked == ["patch", "patch"]

    asyncio.run(asyncio.wait_for(scenario(), timeout=5))

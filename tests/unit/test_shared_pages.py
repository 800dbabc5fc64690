"""One reading of a namespace's incidents for every report asked at the same moment
(`runtime.flight.SharedPages`, used by `runtime.httpserver.Reports`): thirteen months asked at
once cost one paged reading, each report the same as asked alone; a reader that comes after the
first page starts a reading of its own and misses nothing; a reading's error is every joined
reader's."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Hashable, Mapping, Sequence
from typing import Any

import pytest

from incident_operator.runtime import httpserver
from incident_operator.runtime.flight import SharedPages

Objects = Sequence[Mapping[str, Any]]


def incident(n: int) -> dict[str, Any]:
    month = n % 12 + 1
    return {
        "metadata": {
            "name": f"i{n}",
            "namespace": "shop",
            "uid": f"uid-{n}",
            "creationTimestamp": f"2026-{month:02d}-10T09:00:00Z",
        },
        "spec": {"title": f"i{n}", "severity": f"P{n % 4 + 1}", "category": "availability"},
        "status": {"phase": "Closed", "detectedAt": f"2026-{month:02d}-10T09:00:00Z"},
    }


async def answer() -> None:
    """What an API answer does to the event loop: the reading resumes on a later turn of it, so
    the other readers' tasks run in between (a future the loop resolves, not a timed wait)."""
    loop = asyncio.get_running_loop()
    answered: asyncio.Future[None] = loop.create_future()
    loop.call_soon(answered.set_result, None)
    await answered


class Source:
    """Pages of `per_page` of `objects`, one reading at a time counted; each page waits for the
    event loop (as an API answer does), and `fail_at` (a page number) raises there."""

    def __init__(self, objects: list[dict[str, Any]], per_page: int = 7, fail_at: int | None = None) -> None:
        self.objects, self.per_page, self.fail_at = objects, per_page, fail_at
        self.readings = 0
        self.page_handed = asyncio.Event()

    async def pages(self, namespace: Hashable) -> AsyncIterator[Objects]:
        self.readings += 1
        for number, at in enumerate(range(0, len(self.objects), self.per_page)):
            await answer()  # an answer: other tasks run meanwhile
            if number == self.fail_at:
                raise RuntimeError("the API server went away")
            yield self.objects[at : at + self.per_page]
            self.page_handed.set()


def test_reports_of_thirteen_months_asked_at_once_read_the_pages_once_and_each_is_as_alone() -> None:
    objects = [incident(n) for n in range(120)]

    async def reports(together: bool) -> tuple[list[dict[str, Any]], int]:
        source = Source(objects)
        served = httpserver.Reports(source.pages)
        months = [(2025, 12), *((2026, m) for m in range(1, 13))]
        if together:
            found = await asyncio.gather(*(served.render(y, m, "shop", "json") for y, m in months))
        else:
            found = [await served.render(y, m, "shop", "json") for y, m in months]
        return [json.loads(body) for _, body in found], source.readings

    alone, read_alone = asyncio.run(reports(together=False))
    together, read_together = asyncio.run(reports(together=True))
    assert read_alone == 13
    assert read_together == 1
    assert together == alone
    assert [r["total"] for r in together] == [0] + [10] * 12  # every month's incidents, none twice


def test_a_reader_after_the_first_page_reads_on_its_own_and_misses_nothing() -> None:
    async def main() -> tuple[list[int], list[int], int]:
        source = Source([incident(n) for n in range(30)], per_page=5)
        shared: SharedPages[Objects] = SharedPages(source.pages)
        first: list[int] = []
        late: list[int] = []
        early = asyncio.create_task(shared.read("shop", lambda page: first.append(len(page))))
        await source.page_handed.wait()  # the first reading has handed on a page
        await shared.read("shop", lambda page: late.append(len(page)))
        await early
        return first, late, shared.readings

    first, late, readings = asyncio.run(main())
    assert first == late == [5] * 6
    assert readings == 2


def test_a_reading_that_fails_fails_every_report_that_joined_it() -> None:
    async def main() -> list[BaseException | tuple[str, str]]:
        source = Source([incident(n) for n in range(30)], per_page=5, fail_at=3)
        served = httpserver.Reports(source.pages)
        return list(
            await asyncio.gather(
                served.render(2026, 1, "shop", "json"),
                served.render(2026, 2, "shop", "json"),
                return_exceptions=True,
            )
        )

    found = asyncio.run(main())
    assert [type(f) for f in found] == [httpserver.ListingFailed, httpserver.ListingFailed]


def test_a_reader_that_goes_away_leaves_the_reading_to_the_others() -> None:
    async def main() -> tuple[list[int], int]:
        source = Source([incident(n) for n in range(30)], per_page=5)
        shared: SharedPages[Objects] = SharedPages(source.pages)
        kept: list[int] = []
        leaving = asyncio.create_task(shared.read("shop", lambda page: None))
        staying = asyncio.create_task(shared.read("shop", lambda page: kept.append(len(page))))
        await source.page_handed.wait()
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        await staying
        return kept, shared.readings

    kept, readings = asyncio.run(main())
    assert kept == [5] * 6
    assert readings == 1


def test_a_reader_whose_take_fails_fails_alone_and_an_empty_reading_is_not_joined_after_it_ended() -> None:
    async def main() -> tuple[list[int], BaseException | None, int, int]:
        source = Source([incident(n) for n in range(30)], per_page=5)
        shared: SharedPages[Objects] = SharedPages(source.pages)
        kept: list[int] = []

        def broken(page: Objects) -> None:
            raise ValueError("a report that cannot read a page")

        failing = asyncio.create_task(shared.read("shop", broken))
        await shared.read("shop", lambda page: kept.append(len(page)))
        error = None
        try:
            await failing
        except ValueError as exc:
            error = exc
        empty = Source([])
        nothing: SharedPages[Objects] = SharedPages(empty.pages)
        await nothing.read("shop", lambda page: None)  # no page at all: the reading ends unjoined
        await nothing.read("shop", lambda page: None)
        return kept, error, shared.readings, empty.readings

    kept, error, readings, empty_readings = asyncio.run(main())
    assert kept == [5] * 6  # the other reader got every page
    assert isinstance(error, ValueError)
    assert readings == 1
    assert empty_readings == 2  # the second reader read again, not a reading that had ended

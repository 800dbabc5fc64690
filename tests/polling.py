"""Bounded polling for tests: wait for a condition with a deadline, never a bare sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The condition did not hold before the deadline; the message says what was last seen."""


def wait_until(
    check: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.2,
    describe: Callable[[], str] | None = None,
) -> T:
    """Call `check` until it returns a truthy value and return that value.

    Exceptions raised by `check` count as "not yet" and are reported if the deadline passes.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = check()
        except Exception as exc:
            result, last = None, exc
        else:
            last = result
        if result:
            return result
        if time.monotonic() >= deadline:
            seen = describe() if describe is not None else repr(last)
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {seen}")
        time.sleep(interval)


async def until(check: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.01) -> None:
    """The event loop's `wait_until`: yield to the other tasks until `check()` holds, at most
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)

"""The form cache of the public endpoints: one read per form however many posts miss it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import pytest

from services.ingest import runtime as runtime_module
from services.ingest.runtime import Runtime
from services.ingest.settings import IngestSettings
from shared.app import ServiceContext
from shared.errors import NotFound


class Reads:
    """Stands in for the form's database read: counts reads, each held until released."""

    def __init__(self) -> None:
        self.count = 0
        self.release = asyncio.Event()
        self.answer: object = object()

    async def load_form(self, form_id: str, tx: object) -> object:
        self.count += 1
        await self.release.wait()
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Reads:
    found = Reads()

    @asynccontextmanager
    async def transaction(uow: object) -> AsyncIterator[None]:
        yield None

    monkeypatch.setattr(runtime_module, "load_form", found.load_form)
    monkeypatch.setattr(runtime_module, "transaction", transaction)
    return found


class Context:
    def uow(self) -> None:
        return None


def runtime(ttl_s: float) -> Runtime:
    settings = IngestSettings(ingest_form_cache_ttl_s=ttl_s)
    return Runtime(settings, cast(Any, None), cast(Any, None))


CTX = cast(ServiceContext, Context())


async def test_posts_missing_the_cache_at_once_share_one_read(reads: Reads) -> None:
    rt = runtime(ttl_s=60)
    posts = [asyncio.create_task(rt.form(CTX, "f1")) for _ in range(50)]
    await asyncio.sleep(0)
    reads.release.set()
    found = await asyncio.gather(*posts)
    assert reads.count == 1
    assert all(f is reads.answer for f in found)
    assert await rt.form(CTX, "f1") is reads.answer  # cached now
    assert reads.count == 1


async def test_an_expired_form_is_read_again(reads: Reads) -> None:
    rt = runtime(ttl_s=0)
    reads.release.set()
    await rt.form(CTX, "f1")
    await asyncio.sleep(0.001)
    await rt.form(CTX, "f1")
    assert reads.count == 2


async def test_a_post_that_hangs_up_does_not_cancel_the_read_others_wait_for(
    reads: Reads,
) -> None:
    rt = runtime(ttl_s=60)
    first = asyncio.create_task(rt.form(CTX, "f1"))
    second = asyncio.create_task(rt.form(CTX, "f1"))
    await asyncio.sleep(0)
    first.cancel()
    reads.release.set()
    assert await second is reads.answer
    assert reads.count == 1


async def test_a_form_changed_during_a_read_is_read_again(reads: Reads) -> None:
    rt = runtime(ttl_s=60)
    before = asyncio.create_task(rt.form(CTX, "f1"))
    await asyncio.sleep(0)
    rt.forget_form("f1")  # the form was edited while the read ran: it may be stale
    reads.release.set()
    await before
    await rt.form(CTX, "f1")
    assert reads.count == 2


async def test_a_failed_read_fails_every_waiter_and_is_not_cached(reads: Reads) -> None:
    rt = runtime(ttl_s=60)
    reads.answer = ConnectionError("database down")
    posts = [asyncio.create_task(rt.form(CTX, "f1")) for _ in range(3)]
    await asyncio.sleep(0)
    reads.release.set()
    outcomes = await asyncio.gather(*posts, return_exceptions=True)
    assert all(isinstance(o, ConnectionError) for o in outcomes)
    reads.answer = None  # back, and the form is gone
    with pytest.raises(NotFound):
        await rt.form(CTX, "f1")
    assert reads.count == 2

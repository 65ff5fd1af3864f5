"""Every id Leadwire makes, decided in one place.

- event id (CloudEvents `id`) and correlation id: a random UUID (version 4), `event_id()`.
  Unique across every producer; nothing orders by it.
- public objects of ingest (form, webhook source, submission, engagement):
  `<prefix>_<32 hex>` (`frm_…`, `whs_…`, `sub_…`, `eng_…`), `prefixed(prefix)`. A reader, and
  a support ticket, sees what kind of object an id names.
- rows of contacts (contact, team, owner, task, segment, activity, …): a UUID version 7
  (RFC 9562), `uuid7()`, or `uuid7s()` for bulk work. Time-ordered, so new rows sit together
  at the right end of every index keyed by them.

Ids are strings everywhere (columns, events, URLs); none of them is ever parsed for meaning.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import Iterator


def process_random() -> random.Random:
    """A random generator of this process's own, for ids that need uniqueness, not secrecy:
    seeded from the system's randomness, and again in a forked child, which would otherwise
    repeat its parent's ids. Not the `random` module's shared one, which a test or a library
    may seed to a fixed value."""
    generator = random.Random()
    os.register_at_fork(after_in_child=generator.seed)
    return generator


# Not a `getrandom` system call per event id (about 2 % of workflows' CPU).
_ids_random = process_random()
_VERSION_4 = 0x4 << 76  # the version nibble: the high half of the 7th byte
_VARIANT_BITS = 0x2 << 62  # RFC 9562 variant (10): the top two bits of the 9th byte
_KEPT = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)


def event_id() -> str:
    """A new event (or correlation) id: a random UUID (version 4), formatted here, which costs
    a third of `str(uuid.uuid4())` (hot paths make one per event)."""
    h = f"{_ids_random.getrandbits(128) & _KEPT | _VERSION_4 | _VARIANT_BITS:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def prefixed(prefix: str) -> str:
    """A new public id that names its kind: `frm_5f0c…` (32 random hex digits)."""
    return f"{prefix}_{uuid.uuid4().hex}"


def uuid7() -> str:
    """A new row id: a UUID version 7 (RFC 9562), time-ordered (see `uuid7s`)."""
    return _uuid7(_unix_ms_hex(), os.urandom(10).hex())


def uuid7s(chunk: int = 256) -> Iterator[str]:
    """Endless new ids like `uuid7`'s, for bulk work: the randomness (and the millisecond) is
    drawn once per `chunk` ids, instead of one system call per id.

    Ids are time-ordered (milliseconds, then random bits) so that the rows one batch creates
    sit together at the right end of every index keyed by them (contacts, tags, timeline): a
    random UUID sends each insert to a random page of a large index, and with a million
    contacts those pages no longer stay in PostgreSQL's buffers.
    """
    while True:
        ms = _unix_ms_hex()
        pool = os.urandom(10 * chunk).hex()
        yield from [_uuid7(ms, pool[start : start + 20]) for start in range(0, 20 * chunk, 20)]


_VARIANT = "89ab" * 4  # a hex digit's low two bits under the RFC 9562 variant bits (10)


def _unix_ms_hex() -> str:
    return f"{time.time_ns() // 1_000_000:012x}"


def _uuid7(ms: str, r: str) -> str:
    """The UUID version 7 string of a millisecond timestamp (12 hex digits) and 20 random hex
    digits (74 of their bits kept)."""
    return f"{ms[:8]}-{ms[8:]}-7{r[1:4]}-{_VARIANT[int(r[4], 16)]}{r[5:8]}-{r[8:]}"

"""Every id kind of `shared.ids` has its documented form."""

from __future__ import annotations

import random
import re
import uuid

from shared import ids
from shared.events.envelope import new_id
from tests.helpers import made_here_and_in_a_fork


def test_event_ids_are_random_uuids() -> None:
    made = {ids.event_id() for _ in range(1000)} | {new_id() for _ in range(1000)}
    assert len(made) == 2000
    assert {uuid.UUID(i).version for i in made} == {4}
    assert {uuid.UUID(i).variant for i in made} == {uuid.RFC_4122}
    assert all(str(uuid.UUID(i)) == i for i in made)  # the canonical form


def test_event_ids_do_not_follow_the_random_modules_seed() -> None:
    random.seed(7)
    first = ids.event_id()
    random.seed(7)
    assert ids.event_id() != first


def test_a_forked_child_does_not_repeat_its_parents_event_ids() -> None:
    parents, childs = made_here_and_in_a_fork(lambda: [ids.event_id() for _ in range(3)])
    assert len(childs) == 3
    assert not parents & childs


def test_prefixed_ids_name_their_kind() -> None:
    made = [ids.prefixed("frm") for _ in range(1000)]
    assert len(set(made)) == 1000
    assert all(re.fullmatch(r"frm_[0-9a-f]{32}", i) for i in made)


def test_row_ids_are_time_ordered_version_7_uuids() -> None:
    bulk = ids.uuid7s(chunk=5)
    made = [next(bulk) for _ in range(20)] + [ids.uuid7() for _ in range(20)]
    assert {uuid.UUID(i).version for i in made} == {7}
    assert {uuid.UUID(i).variant for i in made} == {uuid.RFC_4122}
    assert [i[:13] for i in made] == sorted(i[:13] for i in made)  # milliseconds first

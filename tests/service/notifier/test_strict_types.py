"""Requests are held to their documented schema (unknown keys, clock times, status names),
a channel cannot be renamed onto another's name, and every instant answered is in UTC."""

from __future__ import annotations

import pytest

from tests.helpers import token
from tests.service.notifier.conftest import SCOPES, Notifier


class TestStrictRequests:
    async def test_a_channel_cannot_be_renamed_onto_another(self, notifier: Notifier) -> None:
        await notifier.channel("first", "log")
        second = await notifier.channel("second", "log")
        renamed = await notifier.client.put(
            f"/v1/channels/{second['id']}",
            json={"name": "first", "kind": "log"},
            headers=token(notifier.workspace, *SCOPES),
        )
        assert renamed.status_code == 422, renamed.text
        assert renamed.json()["errors"][0] == {
            "field": "name",
            "code": "taken",
            "message": "a channel named 'first' exists",
        }

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"quiet_hours": {"start": "24:00", "end": "07:00"}}, "quiet_hours.start"),
            ({"quiet_hours": {"start": "21:00", "end": "07:60"}}, "quiet_hours.end"),
            ({"owners": {"o1": {"e-mail": "a@b.c"}}}, "owners.o1.e-mail"),
            ({"tracking": True, "trackin": False}, "trackin"),
        ],
    )
    async def test_settings_outside_their_schema_are_refused(
        self, notifier: Notifier, body: dict[str, object], field: str
    ) -> None:
        answer = await notifier.client.put(
            "/v1/settings", json=body, headers=token(notifier.workspace, *SCOPES)
        )
        assert answer.status_code == 422, answer.text
        assert [e["field"] for e in answer.json()["errors"]] == [field]

    async def test_an_unknown_key_of_a_template_is_refused(self, notifier: Notifier) -> None:
        answer = await notifier.post("/v1/templates", {"name": "t", "text": "hi", "txt": "x"})
        assert answer.status_code == 422
        assert answer.json()["errors"][0]["field"] == "txt"


class TestUtcResponses:
    async def test_a_channel_read_back_carries_its_times_in_utc(self, notifier: Notifier) -> None:
        created = await notifier.channel("c", "log")
        read = (await notifier.get(f"/v1/channels/{created['id']}")).json()
        assert read["created_at"].endswith("Z"), read
        assert read["updated_at"].endswith("Z"), read

"""Operators inspect and replay a DLQ on the real broker with `python -m services dlq`."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Sequence

import pytest

from shared.bus import Subscription
from shared.bus.kafka import KafkaBus
from shared.events.envelope import Envelope
from shared.events.topics import CONTACT_COMMANDS, dlq
from tests.conftest import ROOT, unique
from tests.helpers import eventually


async def cli(prefix: str, bootstrap: str, *args: str) -> list[dict[str, object]]:
    env = os.environ | {
        "LEADWIRE_BUS": "kafka",
        "LEADWIRE_KAFKA_BOOTSTRAP": bootstrap,
        "LEADWIRE_TOPIC_PREFIX": prefix,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services",
        "dlq",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await process.communicate()
    assert process.returncode == 0
    return [json.loads(line) for line in out.decode().splitlines()]


@pytest.mark.kafka
class TestDlqCommand:
    async def test_lists_dead_letters_with_their_error_and_replays_them(
        self, kafka_bootstrap: str
    ) -> None:
        prefix = unique("dlq") + "."
        bus = KafkaBus(
            kafka_bootstrap,
            prefix=prefix,
            max_retries=2,
            backoff_s=0.01,
            topics=[CONTACT_COMMANDS, dlq(CONTACT_COMMANDS)],
        )
        await bus.start()
        healthy = False
        handled: list[str] = []

        async def handler(events: Sequence[Envelope]) -> None:
            if not healthy:
                raise RuntimeError("the owner does not exist yet")
            handled.extend(e.id for e in events)

        try:
            await bus.subscribe(Subscription(unique("g"), (CONTACT_COMMANDS,), handler))
            command = Envelope(
                source="/test",
                type="contact.assign_owner",
                workspace="acme",
                correlationid="c1",
                data={"owner": "o-1"},
            )
            await bus.publish(CONTACT_COMMANDS, "acme:c-1", command)

            async def parked() -> bool:
                return len(await bus.dead_letters(CONTACT_COMMANDS)) == 1

            await eventually(parked)
            [listed] = await cli(prefix, kafka_bootstrap, CONTACT_COMMANDS)
            assert listed["event"]["id"] == command.id  # type: ignore[index]
            assert "owner does not exist" in listed["headers"]["leadwire-error"]  # type: ignore[index]

            healthy = True
            await cli(prefix, kafka_bootstrap, CONTACT_COMMANDS, "--replay")

            async def replayed() -> bool:
                return command.id in handled

            await eventually(replayed)
        finally:
            await bus.stop()

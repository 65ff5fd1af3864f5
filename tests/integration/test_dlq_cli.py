"""Operators inspect and replay a DLQ, and tail a topic, on the real broker with `leadwire`."""

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


async def cli(prefix: str, bootstrap: str, *args: str) -> str:
    env = os.environ | {
        "LEADWIRE_BUS": "kafka",
        "LEADWIRE_KAFKA_BOOTSTRAP": bootstrap,
        "LEADWIRE_TOPIC_PREFIX": prefix,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await process.communicate()
    assert process.returncode == 0
    return out.decode()


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
            shown = await cli(prefix, kafka_bootstrap, "dlq", "show", CONTACT_COMMANDS, "--json")
            [listed] = [json.loads(line) for line in shown.splitlines()]
            assert listed["event"]["id"] == command.id
            assert "owner does not exist" in listed["headers"]["leadwire-error"]
            readable = await cli(prefix, kafka_bootstrap, "dlq", "show", CONTACT_COMMANDS)
            assert command.id in readable
            assert "owner does not exist" in readable
            overview = await cli(prefix, kafka_bootstrap, "dlq", "list")
            [row] = [line for line in overview.splitlines() if line.startswith(CONTACT_COMMANDS)]
            assert row.split()[1] == "1"
            assert "owner does not exist" in row

            healthy = True
            replay_out = await cli(prefix, kafka_bootstrap, "dlq", "replay", CONTACT_COMMANDS)
            assert replay_out.startswith("replayed 1 event(s)")

            async def replayed() -> bool:
                return command.id in handled

            await eventually(replayed)
        finally:
            await bus.stop()


@pytest.mark.kafka
class TestTailCommand:
    async def test_prints_one_readable_line_per_event(self, kafka_bootstrap: str) -> None:
        prefix = unique("tail") + "."
        bus = KafkaBus(kafka_bootstrap, prefix=prefix, topics=[CONTACT_COMMANDS])
        await bus.start()
        try:
            sent = [
                Envelope(
                    source="/test",
                    type="contact.add_tag",
                    workspace="acme",
                    subject=f"c-{n}",
                    correlationid="c1",
                    data={"tag": f"t{n}"},
                )
                for n in range(3)
            ]
            for event in sent:
                await bus.publish(CONTACT_COMMANDS, f"acme:{event.subject}", event)
            out = await cli(
                prefix, kafka_bootstrap, "tail", CONTACT_COMMANDS, "--from-start", "-n", "3"
            )
        finally:
            await bus.stop()
        lines = out.splitlines()
        assert len(lines) == 3
        for line in lines:
            assert line.startswith("20")  # the event's time first
            assert "leadwire.contact-commands.v1[" in line
            assert "contact.add_tag" in line
            assert "ws=acme" in line
        assert sorted(line.split("subject=")[1].split()[0] for line in lines) == [
            "c-0",
            "c-1",
            "c-2",
        ]

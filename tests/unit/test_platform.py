"""Pure platform pieces: the envelope, topic names, settings and JSON logs."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import PrivateAttr

from shared.auth import validate_workspace
from shared.errors import InvalidInput
from shared.events.envelope import Envelope, PreparedEnvelope, peek_type
from shared.events.ingest import LeadCaptured, PurchaseCompleted
from shared.events.topics import ALL_TOPICS, all_topics_with_dlq, contact_key, dlq
from shared.logs import JsonFormatter, correlation_id_var, event_id_var, workspace_var
from shared.settings import Settings


def lead() -> LeadCaptured:
    return LeadCaptured(
        submission_id="s1",
        source="form",
        dedupe_key="email:ada@example.com",
        email="ada@example.com",
        captured_at=datetime(2026, 1, 2, tzinfo=UTC),
    )


class TestEnvelope:
    def test_has_the_cloudevents_attributes_and_leadwire_extensions(self) -> None:
        env = Envelope.of(lead(), source="/leadwire/ingest", workspace="acme", subject="s1")
        wire = json.loads(env.to_bytes())
        assert wire["specversion"] == "1.0"
        assert wire["type"] == "lead.captured"
        assert wire["datacontenttype"] == "application/json"
        assert {"id", "source", "time", "subject", "data", "workspace", "correlationid"} <= set(
            wire
        )

    def test_round_trips_through_bytes_to_the_typed_payload(self) -> None:
        env = Envelope.of(lead(), source="/leadwire/ingest", workspace="acme")
        again = Envelope.from_bytes(env.to_bytes())
        assert again == env
        assert again.payload(LeadCaptured).email == "ada@example.com"

    def test_refuses_to_read_a_payload_of_another_type(self) -> None:
        env = Envelope.of(lead(), source="/leadwire/ingest", workspace="acme")
        with pytest.raises(ValueError, match=r"not purchase\.completed"):
            env.payload(PurchaseCompleted)

    def test_inherits_the_correlation_id_of_the_work_in_progress(self) -> None:
        token = correlation_id_var.set("corr-42")
        try:
            env = Envelope.of(lead(), source="/x", workspace="acme")
        finally:
            correlation_id_var.reset(token)
        assert env.correlationid == "corr-42"

    def test_the_message_key_it_was_delivered_under_is_kept_but_never_serialised(self) -> None:
        env = Envelope.of(lead(), source="/leadwire/ingest", workspace="acme")
        assert env.message_key is None
        delivered = Envelope.from_bytes(env.to_bytes()).delivered_under("acme:c1")
        assert delivered.message_key == "acme:c1"
        assert delivered.model_copy().message_key == "acme:c1"
        assert delivered.to_bytes() == env.to_bytes()
        assert Envelope.from_bytes(delivered.to_bytes()).message_key is None

    def test_a_subclass_keeps_its_own_private_attributes_once_delivered(self) -> None:
        class Parsed(Envelope):
            _note: str | None = PrivateAttr(default=None)

        env = Parsed.from_bytes(Envelope.of(lead(), source="/x", workspace="acme").to_bytes())
        assert isinstance(env, Parsed)
        env._note = "kept"
        env.delivered_under("acme:c1")
        assert (env._note, env.message_key) == ("kept", "acme:c1")


class TestPeekType:
    def test_reads_the_type_of_every_envelope_our_encoders_write(self) -> None:
        env = Envelope.of(lead(), source="/leadwire/ingest", workspace="acme", subject="s1")
        assert peek_type(env.to_bytes()) == "lead.captured"
        prepared = PreparedEnvelope.prepare(
            "contact.created", {"type": "nested"}, source="/c", workspace="acme"
        )
        assert peek_type(prepared.to_bytes()) == "contact.created"

    def test_a_type_lookalike_inside_a_string_is_not_taken_for_it(self) -> None:
        env = Envelope(source='/a","type":"fake', type="real.one", workspace="w", correlationid="c")
        assert peek_type(env.to_bytes()) == "real.one"

    @pytest.mark.parametrize(
        "raw",
        [
            b'{"type":"a.b","specversion":"1.0","id":"1"}',  # another encoder's order
            b'{"specversion": "1.0", "id": "1", "type": "a.b"}',  # spaces
            b'{"specversion":"1.0","id":"1","source":"/s","x":{"k":1},"type":"a.b"}',
            b'{"specversion":"1.0","id":"1","source":"/s","type":"a\\u002eb"}',
            b"not json",
        ],
    )
    def test_gives_up_where_it_cannot_be_sure_so_the_event_is_decoded(self, raw: bytes) -> None:
        assert peek_type(raw) is None


class TestTopics:
    def test_every_topic_is_versioned_and_has_a_dlq_twin(self) -> None:
        assert len(ALL_TOPICS) == 10
        assert all(t.startswith("leadwire.") and t.endswith(".v1") for t in ALL_TOPICS)
        assert set(all_topics_with_dlq()) == set(ALL_TOPICS) | {dlq(t) for t in ALL_TOPICS}

    def test_the_key_keeps_one_contact_on_one_partition(self) -> None:
        assert contact_key("acme", "c-1") == "acme:c-1"


class TestSettings:
    def test_read_from_leadwire_variables_and_database_url(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("LEADWIRE_BUS", "kafka")
        monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://u@h/db")
        settings = Settings()
        assert settings.bus == "kafka"
        assert not settings.should_migrate_on_start
        assert settings.database_url_for("contacts") == "postgresql+asyncpg://u@h/db"

    def test_the_embedded_default_is_one_sqlite_file_per_service(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("DATABASE_URL", raising=False)  # set when tests share a server
        monkeypatch.delenv("LEADWIRE_DATABASE_URL", raising=False)
        settings = Settings(data_dir=tmp_path)
        assert (
            settings.database_url_for("contacts") == f"sqlite+aiosqlite:///{tmp_path}/contacts.db"
        )
        assert settings.should_migrate_on_start

    def test_a_short_auth_secret_is_refused(self) -> None:
        with pytest.raises(ValueError, match="at least 32"):
            Settings(auth_secret="short").resolved_auth_secret()

    def test_outside_the_embedded_mode_an_auth_secret_is_required(self) -> None:
        with pytest.raises(RuntimeError, match="LEADWIRE_AUTH_SECRET"):
            Settings(bus="kafka", auth_secret=None).resolved_auth_secret()


class TestJsonLogs:
    def test_a_line_carries_workspace_event_and_correlation_ids(self) -> None:
        tokens = (workspace_var.set("acme"), event_id_var.set("e1"), correlation_id_var.set("c1"))
        try:
            record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("ada",), None)
            record.topic = "leadwire.leads.v1"
            line = json.loads(JsonFormatter().format(record))
        finally:
            workspace_var.reset(tokens[0])
            event_id_var.reset(tokens[1])
            correlation_id_var.reset(tokens[2])
        assert line["message"] == "hello ada"
        assert line["workspace"] == "acme"
        assert line["event_id"] == "e1"
        assert line["correlation_id"] == "c1"
        assert line["topic"] == "leadwire.leads.v1"


class TestKafkaPartitioner:
    def test_partitions_as_kafkas_default_partitioner_does(self) -> None:
        import random

        from aiokafka.partitioner import murmur2

        from shared.bus.kafka import partition_of

        chooser = random.Random(7)
        keys = [chooser.randbytes(chooser.randint(0, 120)) for _ in range(3000)]
        keys += [b"", b"a", "ws:email:zoë@bücher.example".encode()]
        partitions = list(range(12))
        for key in keys:
            assert partition_of(key, partitions) == (murmur2(key) & 0x7FFFFFFF) % 12
        # Known value of Kafka's murmur2 (Utils.murmur2 in the Java client).
        assert murmur2(b"21") == -973932308 & 0xFFFFFFFF


class TestWorkspaceNames:
    def test_a_workspace_name_is_lower_case_letters_digits_and_dashes(self) -> None:
        assert validate_workspace("acme-2") == "acme-2"
        for bad in ("Acme", "a", "acme_2", "acme\n", "-acme"):
            with pytest.raises(InvalidInput):
                validate_workspace(bad)

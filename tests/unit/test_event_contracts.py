"""The checked-in JSON Schemas and AsyncAPI document match the event models."""

from __future__ import annotations

from scripts.export_schemas import SCHEMAS, rendered
from shared.events.catalog import TOPIC_EVENTS


class TestPublishedContracts:
    def test_checked_in_schemas_match_the_code(self) -> None:
        stale = [
            str(path.relative_to(SCHEMAS))
            for path, text in rendered().items()
            if not path.exists() or path.read_text() != text
        ]
        assert not stale, f"event contracts changed; run scripts/export_schemas.py: {stale}"

    def test_no_schema_file_is_left_for_an_event_that_no_longer_exists(self) -> None:
        expected = set(rendered())
        on_disk = set((SCHEMAS / "events").glob("*.json")) | {SCHEMAS / "asyncapi.json"}
        on_disk |= set((SCHEMAS / "openapi").glob("*.json"))
        assert on_disk <= expected

    def test_every_event_has_a_docstring_saying_when_it_is_emitted(self) -> None:
        for events in TOPIC_EVENTS.values():
            for cls in events:
                assert cls.__doc__, cls.__name__

    def test_event_types_are_unique(self) -> None:
        types = [cls.event_type for events in TOPIC_EVENTS.values() for cls in events]
        assert len(types) == len(set(types))


class TestEventSources:
    def test_every_service_writes_its_events_under_one_source_form(self) -> None:
        """`source` is `/leadwire/<service>` for every producer, so consumers can filter on it
        (they once read `/leadwire/contacts`, `workflows`, `leadwire/notifier` and `/access`)."""
        import services.access.handlers as access
        import services.contacts.handlers as contacts
        import services.ingest.handlers as ingest
        import services.ingest.tracking as tracking
        import services.notifier.handlers as notifier
        import services.scoring.publish as scoring
        import services.workflows.engine.handlers as workflows

        found = {
            "access": access.SOURCE,
            "contacts": contacts.SOURCE,
            "ingest": ingest.SOURCE,
            "ingest tracking": tracking.SOURCE,
            "notifier": notifier.SOURCE,
            "scoring": scoring.SOURCE,
            "workflows": workflows.SOURCE,
        }
        expected = {name: f"/leadwire/{name.split()[0]}" for name in found}
        assert found == expected

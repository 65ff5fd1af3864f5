"""One lead's path is one trace: form POST → publish on the leads topic → contacts' handling
→ publish on the contacts topic, parent to child, across a real Kafka hop."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind

from services.contacts.main import app as contacts_app
from services.contacts.settings import ContactsSettings
from services.ingest.main import app as ingest_app
from services.ingest.settings import IngestSettings
from shared import tracing
from shared.events import topics
from tests.conftest import unique
from tests.helpers import distributed_settings, eventually, running, token

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_TRACEPARENT = f"00-{CALLER_TRACE}-b7ad6b7169203331-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_ON)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.shutdown()


def only(found: list[ReadableSpan], what: str) -> ReadableSpan:
    assert len(found) == 1, f"{what}: {[s.name for s in found]}"
    return found[0]


@pytest.mark.kafka
@pytest.mark.postgres
async def test_a_form_post_and_everything_it_causes_is_one_trace(
    kafka_bootstrap: str, postgres_url: str, spans: InMemorySpanExporter
) -> None:
    prefix = unique("trc") + "."
    base = distributed_settings(kafka_bootstrap, postgres_url, prefix).model_dump()
    workspace = unique("ws")
    admin = token(workspace, "admin")
    email = f"{unique('ada')}@example.com"
    ingest = ingest_app(IngestSettings(**base))
    contacts = contacts_app(ContactsSettings(**base))
    async with running(ingest) as http, running(contacts) as contacts_http:

        async def ready() -> bool:
            answers = [await c.get("/readyz") for c in (http, contacts_http)]
            return all(a.status_code == 200 for a in answers)

        await eventually(ready, timeout=90)
        form = await http.post(
            "/v1/forms",
            headers=admin,
            json={"name": "Trace", "fields": [{"name": "email", "type": "email", "label": "E"}]},
        )
        assert form.status_code == 201, form.text
        posted = await http.post(
            f"/v1/forms/{form.json()['id']}/submissions",
            json={"email": email},
            headers={"traceparent": CALLER_TRACEPARENT},
        )
        assert posted.status_code == 202, posted.text

        def in_trace() -> list[ReadableSpan]:
            found = spans.get_finished_spans()
            return [s for s in found if s.context is not None and s.context.trace_id == trace_id]

        trace_id = int(CALLER_TRACE, 16)

        async def contact_published() -> bool:
            return any(s.name == f"publish {topics.CONTACTS}" for s in in_trace())

        await eventually(contact_published, timeout=60)

    path = in_trace()
    request = only([s for s in path if s.kind == SpanKind.SERVER], "the form POST's server span")
    assert request.name == "POST /v1/forms/{form_id}/submissions"
    assert request.parent is not None
    assert request.parent.span_id == 0xB7AD6B7169203331
    by_id = {s.context.span_id: s for s in path if s.context is not None}

    def parent_of(span: ReadableSpan) -> ReadableSpan:
        assert span.parent is not None, span.name
        return by_id[span.parent.span_id]

    publish_contact = only(
        [s for s in path if s.name == f"publish {topics.CONTACTS}"], "contact publish"
    )
    process_lead = parent_of(publish_contact)
    assert process_lead.kind == SpanKind.CONSUMER
    assert process_lead.name == f"process {prefix}{topics.LEADS}"
    publish_lead = parent_of(process_lead)
    assert publish_lead.kind == SpanKind.PRODUCER
    assert publish_lead.name == f"publish {topics.LEADS}"
    assert parent_of(publish_lead) is request
    assert request.context is not None
    assert any(
        s.name == "outbox write"
        and request.context.span_id in [link.context.span_id for link in s.links]
        for s in spans.get_finished_spans()
    ), "the group commit that wrote the lead links to the request"

    # The record on Kafka carries the publish span's context as its `traceparent` header.
    reader = AIOKafkaConsumer(
        prefix + topics.LEADS,
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await reader.start()
    try:
        batch = await reader.getmany(timeout_ms=5000)
    finally:
        await reader.stop()
    [record] = [m for messages in batch.values() for m in messages]
    headers = dict(record.headers)
    assert publish_lead.context is not None
    assert headers["traceparent"].decode() == tracing.format_traceparent(publish_lead.context)

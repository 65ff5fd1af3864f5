"""The one envelope for every message: CloudEvents 1.0 plus workspace, correlation and trace."""

from __future__ import annotations

import builtins
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, Self, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field

from shared.ids import event_id
from shared.logs import correlation_id_var
from shared.tracing import traceparent_for

# The structured mode of the CloudEvents Kafka (and HTTP) binding: the whole event, attributes
# and data, is the record's value, and this `content-type` header says so to any receiver.
CLOUDEVENTS_JSON = "application/cloudevents+json"
# Attributes every envelope carries: CloudEvents' required four, and what Leadwire always sets.
REQUIRED_ATTRIBUTES = (
    "specversion",
    "id",
    "source",
    "type",
    "time",
    "datacontenttype",
    "data",
    "workspace",
    "correlationid",
)


# How Leadwire's encoders begin every event (attributes in declaration order, no spaces).
_OWN_START = b'{"specversion":"1.0","id":"'
_TYPE_KEY = b'","type":"'


def peek_type(raw: bytes) -> str | None:
    """The `type` of an encoded envelope read without decoding it, or None when that cannot
    be done safely (another encoder's layout, an escape in the type): then decode it whole.

    Our encoders write `type` fourth, after string attributes only; the first `","type":"`
    is the top-level attribute as long as no object opened before it (a quote inside a
    string is escaped, so the pattern never matches within one)."""
    if not raw.startswith(_OWN_START):
        return None
    at = raw.find(_TYPE_KEY, len(_OWN_START))
    if at < 0 or b"{" in raw[1:at]:
        return None
    start = at + len(_TYPE_KEY)
    end = raw.find(b'"', start)
    if end < 0 or b"\\" in raw[start:end]:
        return None
    try:
        return raw[start:end].decode()
    except UnicodeDecodeError:
        return None


def source_of(service: str) -> str:
    """The CloudEvents `source` of every event a service writes: one form for all of them,
    so a consumer can filter on it (`/leadwire/contacts`)."""
    return f"/leadwire/{service}"


class EventPayload(BaseModel):
    """Base of typed payloads; `event_type` is the CloudEvents `type` this payload travels as."""

    model_config = ConfigDict(extra="allow")
    event_type: ClassVar[str]


P = TypeVar("P", bound=EventPayload)


new_id = event_id  # the name callers know; `shared.ids` decides every id


class Envelope(BaseModel):
    """A CloudEvents 1.0 event in structured JSON mode, with Leadwire's extension attributes."""

    # Defaults make a field optional in the generated schema; on the wire these are always set.
    model_config = ConfigDict(
        extra="allow", json_schema_extra={"required": list(REQUIRED_ATTRIBUTES)}
    )

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(default_factory=new_id)
    source: str
    type: str
    subject: str | None = None
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    datacontenttype: str = "application/json"
    data: dict[str, Any] = Field(default_factory=dict)
    workspace: str
    correlationid: str
    # W3C trace context of the span that produced the event. Kept the last attribute: the outbox
    # relay reads it from the tail of the encoded event (`shared.tracing.traceparent_in`).
    traceparent: str | None = None

    @property
    def message_key(self) -> str | None:
        """The bus key this envelope was delivered under (`workspace:contact`, …), if any: set
        by the bus on delivery, None for an envelope built here, never serialised. Kept in
        pydantic's private slot without a declared private attribute: declaring one made every
        decode run pydantic's private set-up, about 6 µs of the 14 a decode took."""
        private = self.__pydantic_private__
        return private.get("message_key") if private else None

    def delivered_under(self, key: str) -> Self:
        """This envelope, marked as delivered under the message key `key`."""
        private = self.__pydantic_private__
        if private is None:
            object.__setattr__(self, "__pydantic_private__", {"message_key": key})
        else:  # a subclass's own private attributes (undeclared names never clash: no `_`)
            private["message_key"] = key
        return self

    @classmethod
    def of(
        cls,
        payload: EventPayload,
        *,
        source: str,
        workspace: str,
        subject: str | None = None,
        correlationid: str | None = None,
        traceparent: str | None = None,
    ) -> Envelope:
        """Wrap a typed payload; correlation id and trace default to the work in progress's."""
        correlationid = correlationid or correlation_id_var.get() or new_id()
        return cls(
            source=source,
            type=payload.event_type,
            subject=subject,
            data=payload.model_dump(mode="json", exclude_none=True),
            workspace=workspace,
            correlationid=correlationid,
            traceparent=traceparent or traceparent_for(correlationid),
        )

    def payload(self, model: builtins.type[P]) -> P:
        if self.type != model.event_type:
            raise ValueError(f"event {self.id} is {self.type}, not {model.event_type}")
        return model.model_validate(self.data)

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", exclude_none=True))

    @classmethod
    def from_bytes(cls, raw: bytes) -> Envelope:
        return cls.model_validate_json(raw)


class PreparedEnvelope(Envelope):
    """An envelope whose `data` is already in its JSON shape (plain dicts, lists, strings,
    numbers, datetimes), for hot paths: built without validation, encoded by one orjson call
    to the bytes `Envelope.of(payload).to_bytes()` gives (`None` attributes left out,
    datetimes as pydantic writes them). Tests hold each hot path's bytes to its models'."""

    def to_bytes(self) -> bytes:
        values = {name: value for name, value in self.__dict__.items() if value is not None}
        return orjson.dumps(values, option=orjson.OPT_UTC_Z)

    @classmethod
    def prepare(
        cls,
        event_type: str,
        data: dict[str, Any],
        *,
        source: str,
        workspace: str,
        subject: str | None = None,
        correlationid: str | None = None,
        event_id: str | None = None,
        time: datetime | None = None,
        traceparent: str | None = None,
    ) -> PreparedEnvelope:
        correlationid = correlationid or correlation_id_var.get() or new_id()
        return cls.model_construct(
            specversion="1.0",
            id=event_id or new_id(),
            source=source,
            type=event_type,
            subject=subject,
            time=time or datetime.now(UTC),
            datacontenttype="application/json",
            data=data,
            workspace=workspace,
            correlationid=correlationid,
            traceparent=traceparent or traceparent_for(correlationid),
        )


def encode_envelope(
    event_type: str,
    data: dict[str, Any],
    *,
    event_id: str,
    source: str,
    workspace: str,
    subject: str,
    correlationid: str,
    time: datetime,
    traceparent: str | None,
) -> bytes:
    """The bytes `PreparedEnvelope.prepare(...).to_bytes()` gives for these values (the
    envelope's attributes in its order, `None` left out), without building the envelope: for
    the services' hottest emits (run events, score events)."""
    document: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": event_type,
        "subject": subject,
        "time": time,
        "datacontenttype": "application/json",
        "data": data,
        "workspace": workspace,
        "correlationid": correlationid,
    }
    if traceparent is not None:
        document["traceparent"] = traceparent
    return orjson.dumps(document, option=orjson.OPT_UTC_Z)

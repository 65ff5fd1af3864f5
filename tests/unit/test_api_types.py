"""The APIs' field types: strict requests, UTC instants with their offset in responses."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta, timezone

import pytest
from pydantic import BaseModel, Field, ValidationError

from shared.api_types import (
    RequestDate,
    RequestDateTime,
    RequestTime,
    StrictBool,
    StrictInt,
    UtcDateTime,
)


class _Request(BaseModel):
    flag: StrictBool | None = None
    at: RequestDateTime | None = None
    on: RequestDate | None = None
    daily: RequestTime | None = None


class _Count(BaseModel):
    count: StrictInt | None = Field(default=None, ge=1, le=10)


class _Response(BaseModel):
    at: UtcDateTime


class TestRequestTypes:
    @pytest.mark.parametrize(
        "body",
        [
            {"flag": 0},
            {"flag": "true"},
            {"at": 0.5},
            {"at": "0.5"},
            {"on": 20260101},
            {"daily": 540},  # YAML's reading of an unquoted 09:00
        ],
    )
    def test_a_value_of_another_type_is_refused(self, body: dict[str, object]) -> None:
        with pytest.raises(ValidationError):
            _Request.model_validate(body)

    def test_values_of_the_documented_types_are_read(self) -> None:
        read = _Request.model_validate(
            {"flag": False, "at": "2026-01-01T10:00:00+02:00", "on": "2026-01-02", "daily": "09:00"}
        )
        assert read.daily == time(9)
        assert read.flag is False
        assert read.at == datetime(2026, 1, 1, 8, tzinfo=UTC)


class TestIntegers:
    @pytest.mark.parametrize("value", ["2", True, 2.5, 0, 11.0])
    def test_text_booleans_fractions_and_out_of_bounds_are_refused(self, value: object) -> None:
        with pytest.raises(ValidationError):
            _Count.model_validate({"count": value})

    def test_a_number_without_fraction_is_an_integer_as_json_schema_says(self) -> None:
        assert _Count.model_validate({"count": 2.0}).count == 2


class TestResponseInstants:
    def test_a_naive_instant_from_the_database_is_written_in_utc_with_its_offset(self) -> None:
        naive = datetime(2026, 11, 28, 20, 48, 5, 319680)  # noqa: DTZ001  # as SQLite gives it
        answer = _Response(at=naive)
        assert answer.model_dump_json() == '{"at":"2026-11-28T20:48:05.319680Z"}'

    def test_an_instant_in_another_zone_is_written_in_utc(self) -> None:
        answer = _Response(at=datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2))))
        assert answer.model_dump_json() == '{"at":"2026-01-01T10:00:00Z"}'

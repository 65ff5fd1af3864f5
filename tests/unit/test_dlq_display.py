"""`leadwire dlq show` prints every dead letter, the ones that are not even JSON too."""

from services.cli.events import shown as _shown


def test_an_event_is_shown_as_json() -> None:
    assert _shown(b'{"id": "e1"}') == {"event": {"id": "e1"}}


def test_bytes_that_are_not_json_are_shown_as_text_instead_of_failing() -> None:
    assert _shown(b'{"poison": "x"') == {"raw": '{"poison": "x"'}
    assert _shown(b"\xff\xfe") == {"raw": "\ufffd\ufffd"}

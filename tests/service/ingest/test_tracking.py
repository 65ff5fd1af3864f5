"""The open pixel and click redirect notifier puts in marketing mail: signed, unforgeable."""

from __future__ import annotations

import uuid

from shared import signed_links
from shared.events import topics
from tests.helpers import SECRET
from tests.service.ingest.conftest import Ingest


def link(purpose: signed_links.Purpose, secret: str = SECRET, **claims: object) -> str:
    return signed_links.sign(secret.encode(), purpose, claims)


class TestTracking:
    async def test_the_pixel_records_an_open_and_answers_a_gif(self, ingest: Ingest) -> None:
        contact = str(uuid.uuid4())
        token = link("open", w=ingest.workspace, c=contact, d="ntf_1")
        response = await ingest.client.get(f"/v1/t/o/{token}")
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/gif"
        assert response.content.startswith(b"GIF89a")
        [event] = await ingest.wait_events(1, topics.ENGAGEMENT)
        assert event.type == "email.opened"
        assert event.workspace == ingest.workspace
        assert event.data["contact_id"] == contact
        assert event.data["properties"] == {"notification_id": "ntf_1"}

    async def test_a_click_is_recorded_and_redirected(self, ingest: Ingest) -> None:
        contact = str(uuid.uuid4())
        url = "https://example.com/pricing?plan=pro"
        token = link("click", w=ingest.workspace, c=contact, d="ntf_2", u=url)
        response = await ingest.client.get(f"/v1/t/c/{token}")
        assert response.status_code == 302
        assert response.headers["location"] == url
        [event] = await ingest.wait_events(1, topics.ENGAGEMENT)
        assert (event.type, event.data["url"], event.data["contact_id"]) == (
            "email.clicked",
            url,
            contact,
        )

    async def test_forged_or_altered_links_are_refused(self, ingest: Ingest) -> None:
        claims = {"w": ingest.workspace, "c": "c1", "d": "ntf_3", "u": "https://example.com"}
        forged = link("click", secret="not-the-secret-" + "x" * 32, **claims)
        genuine = link("click", **claims)
        other_contact = link("click", **(claims | {"c": "c2"}))
        spliced = other_contact.split(".")[0] + "." + genuine.split(".")[1]
        elsewhere = link("click", **(claims | {"u": "https://evil.example"}))
        redirected = elsewhere.split(".")[0] + "." + genuine.split(".")[1]
        as_open = link("open", **claims)
        for token in (forged, spliced, redirected, "nonsense", as_open):
            response = await ingest.client.get(f"/v1/t/c/{token}")
            assert response.status_code == 404, token
            assert response.json()["code"] == "invalid_link"
        assert ingest.events(topics.ENGAGEMENT) == []

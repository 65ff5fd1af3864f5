"""The public form endpoint: content types, answers, CORS, limits, spam and validation."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from shared.events import topics
from tests.helpers import token
from tests.service.ingest.conftest import Ingest, body_of, random_email, serve, settings_for

BROWSER = {"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def valid_fields(email: str) -> dict[str, str]:
    return {
        "email": email,
        "first_name": "  Ann   Lee ",
        "phone": "020 7946 0018",
        "team_size": "11-50",
        "consent": "on",
        "utm_source": "newsletter",
        "utm_medium": "email",
        "utm_campaign": "spring",
        "page_url": "https://www.example.com/pricing",
        "referrer": "https://search.example/",
    }


class TestContentTypes:
    async def test_a_urlencoded_browser_post_is_redirected_and_published(
        self, ingest: Ingest
    ) -> None:
        form = await ingest.create_form()
        email = random_email()
        response = await ingest.client.post(
            f"/v1/forms/{form['id']}/submissions", data=valid_fields(email), headers=BROWSER
        )
        assert response.status_code == 303
        assert response.headers["location"] == "https://www.example.com/thank-you"
        [event] = await ingest.wait_events(1)
        assert event.type == "lead.captured"
        lead = body_of(event)
        assert lead["email"] == email.split("@")[0] + "@example.com"
        assert lead["dedupe_key"] == "email:" + email.lower()
        assert lead["first_name"] == "Ann Lee"
        assert lead["phone"] == "+442079460018"
        assert lead["source"] == "form"
        assert lead["source_id"] == form["id"]
        assert lead["utm"] == {"source": "newsletter", "medium": "email", "campaign": "spring"}
        assert lead["page_url"] == "https://www.example.com/pricing"
        assert lead["referrer"] == "https://search.example/"
        assert lead["consent"]["granted"] is True
        assert lead["consent"]["text"] == "I agree to be contacted."
        assert lead["custom_fields"] == {"team_size": "11-50"}
        assert (
            ingest.bus.records(topics.LEADS)[0].key == f"{ingest.workspace}:email:{email.lower()}"
        )

    async def test_a_multipart_browser_post_is_redirected_and_published(
        self, ingest: Ingest
    ) -> None:
        form = await ingest.create_form()
        email = random_email()
        response = await ingest.client.post(
            f"/v1/forms/{form['id']}/submissions",
            data=valid_fields(email),
            files={"attachment": ("cv.pdf", b"%PDF-1.4", "application/pdf")},
            headers=BROWSER,
        )
        assert response.status_code == 303
        [event] = await ingest.wait_events(1)
        assert body_of(event)["dedupe_key"] == "email:" + email.lower()

    async def test_a_json_post_answers_202_with_the_submission_id(self, ingest: Ingest) -> None:
        form = await ingest.create_form()
        email = random_email()
        fields = valid_fields(email) | {"consent": True}
        response = await ingest.client.post(
            f"/v1/forms/{form['id']}/submissions",
            json=fields,
            headers={"x-correlation-id": "corr-123"},
        )
        assert response.status_code == 202
        body = response.json()
        assert body["status"] == "accepted"
        [event] = await ingest.wait_events(1)
        assert body_of(event)["submission_id"] == body["submission_id"]
        assert event.correlationid == "corr-123"
        assert event.workspace == ingest.workspace

    async def test_a_urlencoded_post_asking_for_json_gets_202(self, ingest: Ingest) -> None:
        form = await ingest.create_form()
        response = await ingest.client.post(
            f"/v1/forms/{form['id']}/submissions",
            data=valid_fields(random_email()),
            headers={"accept": "application/json"},
        )
        assert response.status_code == 202
        assert response.json()["status"] == "accepted"

    async def test_without_a_redirect_url_the_browser_lands_on_the_thank_you_page(
        self, ingest: Ingest
    ) -> None:
        form = await ingest.create_form(redirect_url=None)
        response = await ingest.client.post(
            f"/v1/forms/{form['id']}/submissions",
            data=valid_fields(random_email()),
            headers=BROWSER,
        )
        assert response.status_code == 303
        assert response.headers["location"] == f"/v1/forms/{form['id']}/thanks"
        thanks = await ingest.client.get(response.headers["location"])
        assert "Thank you" in thanks.text

    async def test_another_content_type_answers_415(self, ingest: Ingest) -> None:
        form = await ingest.create_form()
        response = await ingest.client.post(
            f"/v1/forms/{form['id']}/submissions",
            content=b"email=a@example.com",
            headers={"content-type": "text/plain"},
        )
        assert response.status_code == 415
        assert response.json()["code"] == "unsupported_media_type"


class TestCors:
    async def test_an_allowed_origin_gets_cors_headers(self, ingest: Ingest) -> None:
        form = await ingest.create_form()
        response = await ingest.client.post(
            f"/v1/forms/{form['id']}/submissions",
            json=valid_fields(random_email()),
            headers={"origin": "https://www.example.com"},
        )
        assert response.status_code == 202
        assert response.headers["access-control-allow-origin"] == "https://www.example.com"
        assert response.headers["vary"] == "Origin"

    async def test_a_disallowed_origin_answers_403_and_nothing_is_published(
        self, ingest: Ingest
    ) -> None:
        form = await ingest.create_form()
        response = await ingest.client.post(
            f"/v1/forms/{form['id']}/submissions",
            json=valid_fields(random_email()),
            headers={"origin": "https://evil.example"},
        )
        assert response.status_code == 403
        assert response.json()["code"] == "origin_not_allowed"
        assert "access-control-allow-origin" not in response.headers
        assert ingest.events() == []

    async def test_a_preflight_from_an_allowed_origin_is_answered(self, ingest: Ingest) -> None:
        form = await ingest.create_form()
        response = await ingest.client.options(
            f"/v1/forms/{form['id']}/submissions",
            headers={
                "origin": "https://www.example.com",
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type",
            },
        )
        assert response.status_code == 204
        assert response.headers["access-control-allow-origin"] == "https://www.example.com"
        assert "POST" in response.headers["access-control-allow-methods"]
        assert "content-type" in response.headers["access-control-allow-headers"]

    async def test_a_preflight_from_another_origin_answers_403(self, ingest: Ingest) -> None:
        form = await ingest.create_form()
        response = await ingest.client.options(
            f"/v1/forms/{form['id']}/submissions",
            headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
        )
        assert response.status_code == 403
        assert "access-control-allow-origin" not in response.headers

    async def test_the_hosted_page_may_post_to_its_own_origin(self, ingest: Ingest) -> None:
        form = await ingest.create_form()
        response = await ingest.client.post(
            f"/v1/forms/{form['id']}/submissions",
            data=valid_fields(random_email()),
            headers=BROWSER | {"origin": "http://testserver"},
        )
        assert response.status_code == 303


class TestSpamAndAbuse:
    async def test_a_filled_honeypot_looks_accepted_but_is_quarantined_as_spam(
        self, ingest: Ingest
    ) -> None:
        form = await ingest.create_form()
        fields = valid_fields(random_email()) | {"website": "http://cheap-pills.example"}
        browser = await ingest.client.post(
            f"/v1/forms/{form['id']}/submissions", data=fields, headers=BROWSER
        )
        assert browser.status_code == 303
        assert browser.headers["location"] == "https://www.example.com/thank-you"
        api = await ingest.client.post(f"/v1/forms/{form['id']}/submissions", json=fields)
        assert api.status_code == 202
        assert api.json()["status"] == "accepted"
        quarantine = await ingest.client.get("/v1/quarantine", headers=ingest.admin)
        items = quarantine.json()["items"]
        assert [i["reason"] for i in items] == ["spam.honeypot", "spam.honeypot"]
        assert api.json()["submission_id"] in {i["id"] for i in items}
        assert ingest.events() == []

    async def test_a_body_over_64_kib_answers_413(self, ingest: Ingest) -> None:
        form = await ingest.create_form()
        response = await ingest.client.post(
            f"/v1/forms/{form['id']}/submissions",
            data={"email": "a@example.com", "notes": "x" * (64 * 1024)},
        )
        assert response.status_code == 413
        assert response.json()["code"] == "payload_too_large"

    async def test_a_chunked_body_without_content_length_is_cut_off_at_64_kib(
        self, ingest: Ingest
    ) -> None:
        form = await ingest.create_form()

        async def chunks() -> AsyncIterator[bytes]:
            yield b"email=a%40example.com&notes="
            for _ in range(100):
                yield b"x" * 1024

        response = await ingest.client.post(
            f"/v1/forms/{form['id']}/submissions",
            content=chunks(),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 413

    async def test_a_lying_content_length_does_not_get_past_the_limit(self, ingest: Ingest) -> None:
        form = await ingest.create_form()

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(80):
                yield b"x" * 1024

        response = await ingest.client.post(
            f"/v1/forms/{form['id']}/submissions",
            content=chunks(),
            headers={"content-type": "application/x-www-form-urlencoded", "content-length": "10"},
        )
        assert response.status_code == 413


class TestRateLimits:
    async def test_too_many_posts_from_one_address_answer_429_with_retry_after(
        self, tmp_path: Path
    ) -> None:
        settings = settings_for(tmp_path, ingest_form_burst=3, ingest_form_rate_per_s=0.1)
        async with serve(settings) as ingest:
            client = ingest.client
            form = await ingest.create_form()
            url = f"/v1/forms/{form['id']}/submissions"
            statuses = [
                (await client.post(url, json=valid_fields(random_email()))).status_code
                for _ in range(4)
            ]
            assert statuses == [202, 202, 202, 429]
            limited = await client.post(url, json=valid_fields(random_email()))
            assert limited.status_code == 429
            assert int(limited.headers["retry-after"]) >= 1
            assert limited.json()["code"] == "rate_limited"
            other_form = await ingest.create_form()
            other = await client.post(
                f"/v1/forms/{other_form['id']}/submissions", json=valid_fields(random_email())
            )
            assert other.status_code == 202

    async def test_a_workspace_quota_caps_every_way_in(self, tmp_path: Path) -> None:
        workspace = f"ws-{uuid.uuid4().hex[:8]}"
        settings = settings_for(tmp_path, ingest_workspace_quotas={workspace: 2})
        async with serve(settings, workspace) as ingest:
            client = ingest.client
            form = await ingest.create_form()
            url = f"/v1/forms/{form['id']}/submissions"
            assert (await client.post(url, json=valid_fields(random_email()))).status_code == 202
            lead = await client.post(
                "/v1/leads", json={"email": random_email()}, headers=token(workspace, "leads:write")
            )
            assert lead.status_code == 202
            over = await client.post(url, json=valid_fields(random_email()))
            assert over.status_code == 429
            assert "retry-after" in over.headers


class TestValidation:
    async def test_a_json_post_with_errors_lists_every_failing_field_with_its_code(
        self, ingest: Ingest
    ) -> None:
        form = await ingest.create_form()
        response = await ingest.client.post(
            f"/v1/forms/{form['id']}/submissions",
            json={
                "email": "not-an-email",
                "phone": "123",
                "company": "x" * 60,
                "team_size": "500+",
            },
        )
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["code"] == "validation_failed"
        assert {e["field"]: e["code"] for e in problem["errors"]} == {
            "email": "invalid_email",
            "first_name": "required",
            "phone": "invalid_phone",
            "company": "too_long",
            "team_size": "not_an_option",
            "consent": "required",
        }
        assert problem["submission_id"].startswith("sub_")
        assert ingest.events() == []

    async def test_a_pattern_failure_is_reported_as_pattern(self, ingest: Ingest) -> None:
        form = await ingest.create_form(
            fields=[
                {"name": "email", "type": "email", "label": "Email", "required": True},
                {"name": "ref", "label": "Reference", "pattern": "[A-Z]{2}-[0-9]{4}"},
            ],
            consent=None,
        )
        response = await ingest.client.post(
            f"/v1/forms/{form['id']}/submissions", json={"email": "a@example.com", "ref": "ab-1"}
        )
        assert response.status_code == 422
        assert response.json()["errors"] == [
            {
                "field": "ref",
                "code": "pattern",
                "message": "Reference is not in the expected format",
            }
        ]

    async def test_a_browser_post_with_errors_gets_the_form_back_with_values_kept(
        self, ingest: Ingest
    ) -> None:
        form = await ingest.create_form()
        response = await ingest.client.post(
            f"/v1/forms/{form['id']}/submissions",
            data={"email": "ann@@example", "first_name": "", "company": "Acme <b>Ltd</b>"},
            headers=BROWSER,
        )
        assert response.status_code == 422
        assert response.headers["content-type"].startswith("text/html")
        html = response.text
        assert 'role="alert"' in html
        assert 'id="f-email-error"' in html
        assert 'aria-invalid="true"' in html
        assert "First name is required" in html
        assert 'value="ann@@example"' in html
        assert 'value="Acme &lt;b&gt;Ltd&lt;/b&gt;"' in html
        quarantine = await ingest.client.get("/v1/quarantine", headers=ingest.admin)
        assert quarantine.json()["items"][0]["reason"] == "validation_failed"

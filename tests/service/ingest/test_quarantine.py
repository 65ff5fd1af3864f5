"""Quarantine: every rejected or spam submission kept raw, listed, and released after a fix."""

from __future__ import annotations

from tests.helpers import token
from tests.service.ingest.conftest import Ingest, body_of, random_email


class TestQuarantine:
    async def test_a_rejected_post_is_kept_raw_with_its_errors(self, ingest: Ingest) -> None:
        form = await ingest.create_form()
        await ingest.client.post(
            f"/v1/forms/{form['id']}/submissions",
            data={"email": "nope", "first_name": "Ann"},
            headers={"accept": "application/json"},
        )
        response = await ingest.client.get(
            "/v1/quarantine", headers=token(ingest.workspace, "quarantine:read")
        )
        [item] = response.json()["items"]
        assert item["source"] == "form"
        assert item["source_id"] == form["id"]
        assert item["status"] == "rejected"
        assert item["reason"] == "validation_failed"
        assert item["content_type"] == "application/x-www-form-urlencoded"
        assert item["data"] == {"email": ["nope"], "first_name": ["Ann"]}
        assert {e["code"] for e in item["errors"]} == {"invalid_email", "required"}

    async def test_quarantine_can_be_filtered_and_paged(self, ingest: Ingest) -> None:
        form = await ingest.create_form()
        url = f"/v1/forms/{form['id']}/submissions"
        for _ in range(3):
            await ingest.client.post(url, json={"email": "bad"})
        await ingest.client.post(url, json={"email": random_email(), "website": "spam"})
        spam = await ingest.client.get("/v1/quarantine?reason=spam.honeypot", headers=ingest.admin)
        assert len(spam.json()["items"]) == 1
        first = await ingest.client.get("/v1/quarantine?limit=2", headers=ingest.admin)
        cursor = first.json()["next_cursor"]
        second = await ingest.client.get(
            f"/v1/quarantine?limit=2&cursor={cursor}", headers=ingest.admin
        )
        ids = [i["id"] for i in first.json()["items"] + second.json()["items"]]
        assert len(set(ids)) == 4

    async def test_another_workspace_sees_none_of_it(self, ingest: Ingest) -> None:
        form = await ingest.create_form()
        await ingest.client.post(f"/v1/forms/{form['id']}/submissions", json={"email": "bad"})
        other = await ingest.client.get("/v1/quarantine", headers=token("other-ws", "admin"))
        assert other.json()["items"] == []


class TestRelease:
    async def test_a_release_after_fixing_the_form_publishes_the_lead(self, ingest: Ingest) -> None:
        form = await ingest.create_form()
        email = random_email()
        rejected = await ingest.client.post(
            f"/v1/forms/{form['id']}/submissions",
            json={"email": email, "first_name": "Ann", "team_size": "51-200", "consent": True},
        )
        assert rejected.status_code == 422
        submission_id = rejected.json()["submission_id"]
        still_bad = await ingest.client.post(
            f"/v1/quarantine/{submission_id}/release", headers=ingest.admin
        )
        assert still_bad.status_code == 422
        fields = form["fields"]
        fields[-1]["options"].append("51-200")
        await ingest.client.patch(
            f"/v1/forms/{form['id']}", json={"fields": fields}, headers=ingest.admin
        )
        released = await ingest.client.post(
            f"/v1/quarantine/{submission_id}/release",
            headers=token(ingest.workspace, "quarantine:write"),
        )
        assert released.status_code == 200, released.text
        assert released.json() == {
            "submission_id": submission_id,
            "status": "released",
            "dedupe_key": "email:" + email.lower(),
        }
        [event] = await ingest.wait_events(1)
        assert body_of(event)["submission_id"] == submission_id
        assert body_of(event)["custom_fields"] == {"team_size": "51-200"}
        quarantine = await ingest.client.get("/v1/quarantine", headers=ingest.admin)
        assert quarantine.json()["items"] == []
        twice = await ingest.client.post(
            f"/v1/quarantine/{submission_id}/release", headers=ingest.admin
        )
        assert twice.status_code == 409

    async def test_releasing_spam_publishes_it_as_a_lead(self, ingest: Ingest) -> None:
        form = await ingest.create_form()
        spam = await ingest.client.post(
            f"/v1/forms/{form['id']}/submissions",
            json={"email": random_email(), "first_name": "Ann", "consent": True, "website": "x"},
        )
        released = await ingest.client.post(
            f"/v1/quarantine/{spam.json()['submission_id']}/release", headers=ingest.admin
        )
        assert released.status_code == 200
        assert len(await ingest.wait_events(1)) == 1

    async def test_releasing_another_workspaces_submission_answers_404(
        self, ingest: Ingest
    ) -> None:
        form = await ingest.create_form()
        rejected = await ingest.client.post(
            f"/v1/forms/{form['id']}/submissions", json={"email": "x"}
        )
        response = await ingest.client.post(
            f"/v1/quarantine/{rejected.json()['submission_id']}/release",
            headers=token("other-ws", "admin"),
        )
        assert response.status_code == 404

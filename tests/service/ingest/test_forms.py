"""Form definitions: CRUD with scopes, workspaces kept apart, the hosted page and embed.js."""

from __future__ import annotations

from tests.helpers import token
from tests.service.ingest.conftest import Ingest, form_definition


class TestFormCrud:
    async def test_a_created_form_reads_back_with_its_public_urls(self, ingest: Ingest) -> None:
        form = await ingest.create_form()
        assert form["id"].startswith("frm_")
        assert form["version"] == 1
        assert form["submit_url"].endswith(f"/v1/forms/{form['id']}/submissions")
        listed = await ingest.client.get("/v1/forms", headers=token(ingest.workspace, "forms:read"))
        assert [f["id"] for f in listed.json()["items"]] == [form["id"]]
        one = await ingest.client.get(
            f"/v1/forms/{form['id']}", headers=token(ingest.workspace, "forms:read")
        )
        assert one.headers["content-type"].startswith("application/json")
        assert one.json()["fields"] == form["fields"]

    async def test_patch_changes_the_definition_and_bumps_the_version(self, ingest: Ingest) -> None:
        form = await ingest.create_form()
        fields = form["fields"] + [{"name": "notes", "type": "textarea", "label": "Notes"}]
        response = await ingest.client.patch(
            f"/v1/forms/{form['id']}",
            json={"fields": fields, "name": "Renamed"},
            headers=ingest.admin,
        )
        assert response.status_code == 200, response.text
        assert response.json()["version"] == 2
        assert response.json()["name"] == "Renamed"
        assert response.json()["fields"][-1]["name"] == "notes"

    async def test_an_invalid_patch_lists_what_is_wrong(self, ingest: Ingest) -> None:
        form = await ingest.create_form()
        response = await ingest.client.patch(
            f"/v1/forms/{form['id']}",
            json={"fields": [{"name": "size", "type": "select", "label": "Size"}]},
            headers=ingest.admin,
        )
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"

    async def test_a_deleted_form_is_gone_from_its_page_and_endpoint(self, ingest: Ingest) -> None:
        form = await ingest.create_form()
        deleted = await ingest.client.delete(f"/v1/forms/{form['id']}", headers=ingest.admin)
        assert deleted.status_code == 204
        assert (await ingest.client.get(f"/v1/forms/{form['id']}")).status_code == 404
        post = await ingest.client.post(
            f"/v1/forms/{form['id']}/submissions", json={"email": "a@example.com"}
        )
        assert post.status_code == 404

    async def test_a_bad_definition_is_refused_with_422(self, ingest: Ingest) -> None:
        body = form_definition() | {"allowed_origins": ["not an origin"], "default_region": "XX"}
        response = await ingest.client.post("/v1/forms", json=body, headers=ingest.admin)
        assert response.status_code == 422
        fields = {e["field"] for e in response.json()["errors"]}
        assert {"allowed_origins", "default_region"} <= fields


class TestFormScopes:
    async def test_no_token_answers_401(self, ingest: Ingest) -> None:
        response = await ingest.client.post("/v1/forms", json=form_definition())
        assert response.status_code == 401

    async def test_a_read_token_cannot_create(self, ingest: Ingest) -> None:
        response = await ingest.client.post(
            "/v1/forms", json=form_definition(), headers=token(ingest.workspace, "forms:read")
        )
        assert response.status_code == 403

    async def test_another_workspace_sees_404_not_the_form(self, ingest: Ingest) -> None:
        form = await ingest.create_form()
        other = token("someone-else", "admin")
        assert (
            await ingest.client.get(f"/v1/forms/{form['id']}", headers=other)
        ).status_code == 404
        patch = await ingest.client.patch(
            f"/v1/forms/{form['id']}", json={"name": "x"}, headers=other
        )
        assert patch.status_code == 404
        listed = await ingest.client.get("/v1/forms", headers=other)
        assert listed.json()["items"] == []


class TestHostedForm:
    async def test_the_page_is_accessible_html_with_labels_and_required_markers(
        self, ingest: Ingest
    ) -> None:
        form = await ingest.create_form()
        page = await ingest.client.get(
            f"/v1/forms/{form['id']}?utm_source=ads&utm_campaign=spring",
            headers={"referer": "https://search.example/"},
        )
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        html = page.text
        assert '<html lang="en">' in html
        assert '<label for="f-email">Work email' in html
        assert 'id="f-email" name="email" type="email"' in html
        assert 'aria-required="true"' in html
        assert "(required)" in html
        assert '<option value="11-50">11-50</option>' in html
        assert 'name="utm_source" value="ads"' in html
        assert 'name="referrer" value="https://search.example/"' in html
        assert 'name="website"' in html  # the honeypot, hidden from people
        assert "I agree to be contacted." in html

    async def test_form_text_is_escaped(self, ingest: Ingest) -> None:
        form = await ingest.create_form(title="<script>alert(1)</script>")
        page = await ingest.client.get(f"/v1/forms/{form['id']}")
        assert "<script>alert(1)</script>" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text

    async def test_embed_js_carries_the_form_and_its_submit_url(self, ingest: Ingest) -> None:
        form = await ingest.create_form(title="</script><b>x</b>")
        script = await ingest.client.get(f"/v1/forms/{form['id']}/embed.js")
        assert script.status_code == 200
        assert script.headers["content-type"].startswith("application/javascript")
        assert form["submit_url"] in script.text
        assert "</script>" not in script.text.split("var config = ", 1)[1].split(";\n", 1)[0]

    async def test_an_unknown_form_answers_404(self, ingest: Ingest) -> None:
        assert (await ingest.client.get("/v1/forms/frm_nope")).status_code == 404

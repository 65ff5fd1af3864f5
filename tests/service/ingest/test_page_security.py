"""Security headers of the hosted form, its error page and its thank-you page."""

from __future__ import annotations

import re

import httpx

from tests.service.ingest.conftest import Ingest

BROWSER = {"accept": "text/html"}


def directives(response: httpx.Response) -> dict[str, str]:
    policy = response.headers["content-security-policy"]
    return {d.split(" ", 1)[0]: d.split(" ", 1)[1] for d in policy.split("; ")}


def nonces_in(html: str) -> set[str]:
    return set(re.findall(r'nonce="([^"]+)"', html))


class TestPageSecurityHeaders:
    async def test_the_hosted_form_may_be_framed_only_by_its_allowed_origins(
        self, ingest: Ingest
    ) -> None:
        form = await ingest.create_form(
            allowed_origins=["https://www.example.com", "https://shop.example.org"]
        )
        page = await ingest.client.get(f"/v1/forms/{form['id']}")
        assert page.status_code == 200
        assert page.headers["x-content-type-options"] == "nosniff"
        policy = directives(page)
        assert policy["default-src"] == "'none'"
        assert policy["frame-ancestors"] == "https://shop.example.org https://www.example.com"
        assert policy["base-uri"] == "'none'"
        # The post goes to ingest, whose 303 leads to the form's redirect.
        assert policy["form-action"] == "'self' https://www.example.com"
        [nonce] = nonces_in(page.text)
        assert policy["style-src"] == f"'nonce-{nonce}'"
        assert policy["script-src"] == f"'nonce-{nonce}'"

    async def test_a_form_without_allowed_origins_cannot_be_framed(self, ingest: Ingest) -> None:
        form = await ingest.create_form(allowed_origins=[])
        page = await ingest.client.get(f"/v1/forms/{form['id']}")
        assert directives(page)["frame-ancestors"] == "'none'"

    async def test_each_page_has_its_own_nonce(self, ingest: Ingest) -> None:
        form = await ingest.create_form()
        first = await ingest.client.get(f"/v1/forms/{form['id']}")
        second = await ingest.client.get(f"/v1/forms/{form['id']}")
        assert nonces_in(first.text) != nonces_in(second.text)

    async def test_the_error_page_runs_its_focus_script_under_the_policy(
        self, ingest: Ingest
    ) -> None:
        form = await ingest.create_form()
        page = await ingest.client.post(
            f"/v1/forms/{form['id']}/submissions", data={"email": "nope"}, headers=BROWSER
        )
        assert page.status_code == 422
        assert "<script nonce=" in page.text
        [nonce] = nonces_in(page.text)
        assert directives(page)["script-src"] == f"'nonce-{nonce}'"
        assert page.headers["x-content-type-options"] == "nosniff"

    async def test_the_thank_you_page_carries_the_policy(self, ingest: Ingest) -> None:
        form = await ingest.create_form(redirect_url=None, allowed_origins=[])
        page = await ingest.client.get(f"/v1/forms/{form['id']}/thanks")
        assert page.headers["x-content-type-options"] == "nosniff"
        policy = directives(page)
        assert policy["frame-ancestors"] == "'none'"
        assert policy["style-src"] == f"'nonce-{nonces_in(page.text).pop()}'"

    async def test_the_embed_script_is_not_sniffed(self, ingest: Ingest) -> None:
        form = await ingest.create_form()
        script = await ingest.client.get(f"/v1/forms/{form['id']}/embed.js")
        assert script.headers["x-content-type-options"] == "nosniff"

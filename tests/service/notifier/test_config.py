"""Channels and templates over the API: checked at save time, secrets write-only, workspaces
isolated."""

from __future__ import annotations

import pytest

from tests.helpers import token
from tests.receivers import HttpReceiver
from tests.service.notifier.conftest import SCOPES, Notifier


class TestChannels:
    async def test_secrets_are_never_returned(
        self, notifier: Notifier, slack: HttpReceiver
    ) -> None:
        url = slack.url("/hook/secret-path")
        created = await notifier.channel("s", "slack", secrets={"webhook_url": url})
        assert created["secrets_set"] == ["webhook_url"]
        listed = await notifier.get("/v1/channels")
        one = await notifier.get(f"/v1/channels/{created['id']}")
        for text in (str(created), listed.text, one.text):
            assert "secret-path" not in text

    @pytest.mark.parametrize(
        ("body", "field", "code"),
        [
            (
                {"kind": "slack", "secrets": {"webhook_url": "http://hooks.example.com/x"}},
                "secrets.webhook_url",
                "https_required",
            ),
            (
                {
                    "kind": "webhook",
                    "config": {"url": "https://10.0.0.5/hook"},
                    "secrets": {"signing_secret": "whsec_" + "A" * 40},
                },
                "config.url",
                "forbidden_target",
            ),
            (
                {"kind": "webhook", "config": {"url": "https://example.com/h"}},
                "secrets.signing_secret",
                "required",
            ),
            (
                {"kind": "email", "config": {"host": "smtp.example.com"}},
                "config.from_address",
                "required",
            ),
            ({"kind": "slack", "secrets": {}}, "secrets", "required"),
        ],
    )
    async def test_a_bad_channel_is_a_422_naming_the_field(
        self, notifier: Notifier, body: dict[str, object], field: str, code: str
    ) -> None:
        response = await notifier.post("/v1/channels", {"name": "bad", **body})
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert {"field": field, "code": code} in [
            {"field": e["field"], "code": e["code"]} for e in response.json()["errors"]
        ]

    async def test_another_workspace_sees_nothing(self, notifier: Notifier) -> None:
        created = await notifier.channel("mine", "log")
        other = await notifier.get(f"/v1/channels/{created['id']}", workspace="someone-else")
        assert other.status_code == 404
        assert (await notifier.get("/v1/channels", workspace="someone-else")).json() == []


class TestTemplates:
    @pytest.mark.parametrize(
        ("template", "code"),
        [
            ({"text": "Hi {{ contact.first_name "}, "syntax_error"),
            ({"text": "Hi {{ frist_name }}"}, "unknown_variable"),
            ({"text": "Hi {{ contact.frist_name }}"}, "unknown_variable"),
            ({"subject": "{{ contact.__class__.__mro__ }}"}, "sandbox_violation"),
            ({"html": "{{ ''.__class__.__base__.__subclasses__() }}"}, "sandbox_violation"),
            ({"text": "{{ vars.items.__globals__ }}"}, "sandbox_violation"),
            ({"text": "{% if false %}{{ config.__init__ }}{% endif %}"}, "unknown_variable"),
            ({"text": "{{ contact.tags.append('x') }}"}, "sandbox_violation"),
            (
                {"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "{{ nope }}"}}]},
                "unknown_variable",
            ),
        ],
    )
    async def test_a_bad_template_is_refused_when_saved(
        self, notifier: Notifier, template: dict[str, object], code: str
    ) -> None:
        response = await notifier.post("/v1/templates", {"name": "bad", **template})
        assert response.status_code == 422, response.text
        assert code in [e["code"] for e in response.json()["errors"]], response.json()

    async def test_preview_renders_against_a_contact_or_sample_data(
        self, notifier: Notifier
    ) -> None:
        created = await notifier.post(
            "/v1/templates",
            {
                "name": "t",
                "subject": "Hi {{ contact.first_name }}",
                "html": "<b>{{ contact.company }}</b> {{ vars.offer | default('none') }}",
                "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "{{ score }}"}}],
            },
        )
        assert created.status_code == 201, created.text
        template_id = created.json()["id"]
        contact = await notifier.contact(first_name="Linus", company="<Kernel & Co>")
        preview = await notifier.post(
            f"/v1/templates/{template_id}/preview",
            {"contact_id": contact.id, "variables": {"offer": "20%"}},
        )
        assert preview.status_code == 200, preview.text
        body = preview.json()
        assert body["subject"] == "Hi Linus"
        assert body["html"] == "<b>&lt;Kernel &amp; Co&gt;</b> 20%"  # HTML escaped
        assert body["blocks"][0]["text"]["text"] == "87.5"
        sample = await notifier.post(f"/v1/templates/{template_id}/preview", {})
        assert sample.status_code == 200
        assert sample.json()["subject"] == "Hi <first_name>"

    async def test_templates_of_another_workspace_are_not_found(self, notifier: Notifier) -> None:
        created = await notifier.post("/v1/templates", {"name": "t", "text": "hello"})
        template_id = created.json()["id"]
        response = await notifier.post(
            f"/v1/templates/{template_id}/preview", {}, workspace="someone-else"
        )
        assert response.status_code == 404

    async def test_a_template_cannot_be_renamed_onto_another_and_bad_input_is_a_422(
        self, notifier: Notifier
    ) -> None:
        await notifier.post("/v1/templates", {"name": "first", "text": "one"})
        second = (await notifier.post("/v1/templates", {"name": "second", "text": "two"})).json()
        headers = token(notifier.workspace, *SCOPES)
        renamed = await notifier.client.put(
            f"/v1/templates/{second['id']}", json={"name": "first", "text": "x"}, headers=headers
        )
        assert renamed.status_code == 422
        assert renamed.json()["errors"][0]["code"] == "taken"
        unknown = await notifier.post(
            f"/v1/templates/{second['id']}/preview", {"contact_id": "nobody"}
        )
        assert unknown.status_code == 422
        settings = await notifier.client.put(
            "/v1/settings", json={"marketing_daily_cap": False}, headers=headers
        )
        assert settings.status_code == 422

    async def test_a_request_with_an_integer_past_64_bits_is_a_422(
        self, notifier: Notifier
    ) -> None:
        response = await notifier.post(
            "/v1/notifications",
            {"idempotency_key": "k1", "channel": "log", "variables": {"n": 2**70}},
        )
        assert response.status_code == 422

"""The embedded default's `demo` workspace, made over the services' own APIs on first start:
a signup form, a sales team of two owners, `log` channels standing in for Slack and email, and
recipes 1 (new lead alert), 2 (welcome) and 8 (high score). Scoring's default rule set applies
to a workspace that has none. Idempotent: what exists (by name) is left as it is."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import httpx

FORM_NAME = "Demo signup"
TEAM_NAME = "Sales"
OWNERS = (("Ada Lovelace", "ada@demo.example"), ("Grace Hopper", "grace@demo.example"))
CHANNELS = ("slack", "email")  # the names the recipes send to by default
RECIPES = ("new-lead-alert", "welcome", "high-score")
FORM: dict[str, Any] = {
    "name": FORM_NAME,
    "fields": [
        {"name": "email", "type": "email", "label": "Email", "required": True},
        {"name": "first_name", "label": "First name"},
        {"name": "last_name", "label": "Last name"},
        {"name": "company", "label": "Company"},
    ],
}


class DemoSetupFailed(RuntimeError):
    pass


def _ok(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise DemoSetupFailed(
            f"{response.request.method} {response.request.url.path}: "
            f"{response.status_code} {response.text[:300]}"
        )
    return response.json() if response.content else None


async def prepare_demo(urls: Mapping[str, str], token: str) -> list[str]:
    """Make what is missing of the demo workspace; lines saying what is there, for the terminal."""
    headers = {"authorization": f"Bearer {token}"}
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the terminal shows the summary
    async with httpx.AsyncClient(headers=headers, timeout=10) as client:
        ingest, contacts = urls["ingest"], urls["contacts"]
        notifier, workflows = urls["notifier"], urls["workflows"]

        forms = _ok(await client.get(f"{ingest}/v1/forms", params={"limit": 200}))["items"]
        form = next((f for f in forms if f["name"] == FORM_NAME), None)
        if form is None:
            form = _ok(await client.post(f"{ingest}/v1/forms", json=FORM))

        teams = _ok(await client.get(f"{contacts}/v1/teams"))
        team = next((t for t in teams if t["name"] == TEAM_NAME), None)
        if team is None:
            team = _ok(await client.post(f"{contacts}/v1/teams", json={"name": TEAM_NAME}))
            for name, email in OWNERS:
                owner = {"name": name, "email": email, "team_id": team["id"]}
                _ok(await client.post(f"{contacts}/v1/owners", json=owner))

        channels = {c["name"] for c in _ok(await client.get(f"{notifier}/v1/channels"))}
        for name in CHANNELS:
            if name not in channels:
                channel = {"name": name, "kind": "log"}
                _ok(await client.post(f"{notifier}/v1/channels", json=channel))

        installed = _ok(await client.get(f"{workflows}/v1/workflows"))["items"]
        names = {w["name"] for w in installed}
        listed = _ok(await client.get(f"{workflows}/v1/workflows/recipes"))["items"]
        titles = {r["name"]: r["title"] for r in listed}
        params: dict[str, dict[str, Any]] = {
            "new-lead-alert": {"team_id": team["id"], "link_base": contacts},
            "welcome": {"product": "Leadwire", "link_base": contacts},
            "high-score": {"link_base": contacts},
        }
        for recipe in RECIPES:
            if titles[recipe] not in names:
                body = params[recipe] | {"name": titles[recipe]}
                _ok(await client.post(f"{workflows}/v1/workflows/recipes/{recipe}", json=body))

    return [
        f"demo form      {form['hosted_url']}",
        f"  submit       POST {ingest}/v1/forms/{form['id']}/submissions",
        f"demo team      {TEAM_NAME}: {', '.join(n for n, _ in OWNERS)} (round-robin)",
        f"recipes        {', '.join(titles[r] for r in RECIPES)}; Slack and email print here",
    ]

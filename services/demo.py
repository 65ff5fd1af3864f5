"""The embedded default's `demo` workspace, made over the services' own APIs on first start:
a signup form, a sales team of two owners that new leads are assigned to at capture (round-robin),
`log` channels standing in for Slack and email, and recipes 1 (new lead alert), 2 (welcome) and
8 (high score). Scoring's default rule set applies
to a workspace that has none. Idempotent: what exists (by name) is left as it is.

`prepare_workspace` is the general form: the speed-to-lead benchmark and the end-to-end tests
make their workspaces with it, with channels to their own Slack and SMTP stand-ins."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Workspace:
    """What `prepare_workspace` made (or found): the form, the team and its owners (id → name)."""

    form: dict[str, Any]
    team_id: str
    owners: dict[str, str]
    recipes: dict[str, str]  # name → title

    @property
    def submissions_path(self) -> str:
        return f"/v1/forms/{self.form['id']}/submissions"


async def prepare_workspace(
    urls: Mapping[str, str],
    token: str,
    channels: Mapping[str, Mapping[str, Any]],
    recipes: Sequence[str] = RECIPES,
    recipe_params: Mapping[str, Mapping[str, Any]] | None = None,
    owners: Sequence[tuple[str, str]] = OWNERS,
    assign_at_capture: bool = True,
) -> Workspace:
    """A workspace ready for leads, made over the services' APIs: a signup form, a sales team
    whose owners take turns, the named notifier channels and the recipes (the demo, the
    speed-to-lead benchmark and the end-to-end tests all start from one). Idempotent: what
    exists (by name) is left as it is.

    With `assign_at_capture` (the default) contacts assigns every new contact its owner from
    the team's rotation as it captures it, so recipe 1 alerts at once; without, recipe 1 asks
    contacts for the owner with a command and waits for the answer."""
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as client:
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
            for name, email in owners:
                owner = {"name": name, "email": email, "team_id": team["id"]}
                _ok(await client.post(f"{contacts}/v1/owners", json=owner))
        members = _ok(await client.get(f"{contacts}/v1/owners", params={"team_id": team["id"]}))
        team_owners = {o["id"]: o["name"] for o in members}
        rule_url = f"{contacts}/v1/capture-assignment"
        if assign_at_capture:
            _ok(await client.put(rule_url, json={"team_id": team["id"]}))
        elif (await client.get(rule_url)).status_code == 200:
            _ok(await client.delete(rule_url))

        existing = {c["name"] for c in _ok(await client.get(f"{notifier}/v1/channels"))}
        for name, channel in channels.items():
            if name not in existing:
                _ok(await client.post(f"{notifier}/v1/channels", json={"name": name, **channel}))

        installed = _ok(await client.get(f"{workflows}/v1/workflows"))["items"]
        names = {w["name"] for w in installed}
        listed = _ok(await client.get(f"{workflows}/v1/workflows/recipes"))["items"]
        titles = {r["name"]: r["title"] for r in listed}
        params: dict[str, dict[str, Any]] = {
            "new-lead-alert": {"team_id": team["id"]},
            "welcome": {"product": "Leadwire"},
        }
        for recipe in recipes:
            if titles[recipe] not in names:
                body = {"name": titles[recipe], "link_base": contacts}
                body |= params.get(recipe, {}) | dict((recipe_params or {}).get(recipe, {}))
                _ok(await client.post(f"{workflows}/v1/workflows/recipes/{recipe}", json=body))

    return Workspace(form, team["id"], team_owners, {r: titles[r] for r in recipes})


async def prepare_demo(urls: Mapping[str, str], token: str) -> list[str]:
    """Make what is missing of the demo workspace; lines saying what is there, for the terminal."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the terminal shows the summary
    log_channels = {name: {"kind": "log"} for name in CHANNELS}
    made = await prepare_workspace(urls, token, log_channels)
    ingest = urls["ingest"]
    return [
        f"demo form      {made.form['hosted_url']}",
        f"  submit       POST {ingest}{made.submissions_path}",
        f"demo team      {TEAM_NAME}: {', '.join(n for n, _ in OWNERS)} "
        "(round-robin, assigned at capture)",
        f"recipes        {', '.join(made.recipes.values())}; Slack and email print here",
    ]

"""The recipes: each one a set of parameters and the workflow document it becomes.

Pure: a recipe builds a document; saving it goes through the same validation and versioning
as any workflow a team writes, so an installed recipe is theirs to edit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.api_types import StrictBool, StrictInt

Document = dict[str, Any]

LEAD_LINE = (
    "{{ [contact.first_name, contact.last_name] | select | join(' ') | default('Someone', true) }}"
    " <{{ contact.email | default('no email') }}>"
)
DETAILS = (
    "Company: {{ contact.company | default('-') }} · Title: {{ contact.job_title | default('-') }}"
    " · Phone: {{ contact.phone | default('-') }} · Source: {{ contact.source | default('-') }}"
)


class Params(BaseModel):
    """What every recipe accepts: a name for the workflow and whether it starts enabled."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200)
    enabled: StrictBool = True
    # Where links back to a contact point (the contacts API or the team's CRM front end).
    link_base: str = Field("http://127.0.0.1:8002", max_length=500, pattern=r"^https?://[^{}\s]+$")

    @property
    def link(self) -> str:
        """A link back to the contact (a template: the contact's id is filled in at send)."""
        return self.link_base.rstrip("/") + "/v1/contacts/{{ contact.id }}"


class NewLeadAlert(Params):
    team_id: str = Field(min_length=1, max_length=64, description="team whose rule picks owners")
    slack_channel: str = Field("slack", min_length=1, max_length=200)
    form_id: str | None = Field(None, description="only leads from this form; all when unset")


class Welcome(Params):
    email_channel: str = Field("email", min_length=1, max_length=200)
    product: str = Field("our product", min_length=1, max_length=200)


class EvaluationCall(Params):
    days_after: StrictInt = Field(14, ge=1, le=365)


class RenewalReminder(Params):
    email_channel: str = Field("email", min_length=1, max_length=200)
    date_field: str = Field("custom_fields.subscription_end_date", max_length=120)
    days_before: StrictInt = Field(30, ge=1, le=365)


class InactivityWinBack(Params):
    email_channel: str = Field("email", min_length=1, max_length=200)
    inactive_days: StrictInt = Field(30, ge=1, le=3650)
    open_within_days: StrictInt = Field(3, ge=1, le=60)


class ChurnWinBack(Params):
    email_channel: str = Field("email", min_length=1, max_length=200)


class ProductRequestFollowUp(Params):
    field: str = Field("custom_fields.product_requests", max_length=120)


class HighScore(Params):
    slack_channel: str = Field("slack", min_length=1, max_length=200)
    threshold: str = Field("sql", min_length=1, max_length=60)
    group: str = Field("overall", min_length=1, max_length=60)


def new_lead_alert(p: NewLeadAlert) -> Document:
    """New lead → an owner by the team's rule → Slack alert naming the owner, within a second."""
    trigger: Document = {"type": "contact_created"}
    if p.form_id:
        trigger = {"type": "form_submitted", "form_id": p.form_id}
    return {
        "name": p.name or "New lead alert",
        "description": "Assigns every new lead an owner by the team's rotation and tells the "
        "owner on Slack with the lead's details, score and a link back.",
        "trigger": trigger,
        "steps": [
            {
                # A contact assigned at capture (contacts' assignment-at-capture rule) keeps
                # its owner, named in its `contact.created`: straight to the alert.
                "id": "assign",
                "type": "assign_owner",
                "team_id": p.team_id,
                "keep_existing": True,
                "on_kept": "alert",
                "next": "owned",
            },
            {
                # The alert names the owner: wait (briefly) for contacts to say who it is.
                "id": "owned",
                "type": "wait_for_event",
                "event": "contact.owner_assigned",
                "timeout": {"seconds": 30},
                "on_event": "alert",
                "on_timeout": "alert",
            },
            {
                "id": "alert",
                "type": "send_slack",
                "channel": p.slack_channel,
                "text": ":zap: New lead for {{ owner.name | default('the team') }}: "
                + LEAD_LINE
                + "\n"
                + DETAILS
                + "\nScore: {{ score | default('not scored yet') }} · "
                + p.link,
            },
        ],
    }


def welcome(p: Welcome) -> Document:
    """Welcome and onboarding education: emails on day 0, 2 and 7, until customer or opt-out."""

    def email(step: str, subject: str, body: str, nxt: str | None) -> Document:
        return {
            "id": step,
            "type": "send_email",
            "channel": p.email_channel,
            "purpose": "marketing",
            "subject": subject,
            "body": body,
            "next": nxt,
        }

    hello = "Hi {{ contact.first_name | default('there') }},\n\n"
    return {
        "name": p.name or "Welcome and onboarding",
        "description": "Three onboarding emails on day 0, 2 and 7; stops when the contact "
        "becomes a customer or unsubscribes.",
        "trigger": {"type": "contact_created"},
        "goal": {
            "or": [
                {"field": "lifecycle_stage", "op": "eq", "value": "customer"},
                {"field": "subscription_status", "op": "in", "value": ["unsubscribed", "bounced"]},
            ]
        },
        "steps": [
            email(
                "day0",
                f"Welcome to {p.product}, {{{{ contact.first_name | default('friend') }}}}",
                hello + f"Thanks for your interest in {p.product}. Here is how to get started.",
                "wait2",
            ),
            {"id": "wait2", "type": "wait", "duration": {"days": 2}, "next": "day2"},
            email(
                "day2",
                f"Three things teams do first with {p.product}",
                hello + "Most teams start with these three steps. Reply if we can help.",
                "wait7",
            ),
            {"id": "wait7", "type": "wait", "duration": {"days": 5}, "next": "day7"},
            email(
                "day7",
                f"How is it going with {p.product}?",
                hello + "A week in: book a call with us if you would like a walkthrough.",
                None,
            ),
        ],
    }


def evaluation_call(p: EvaluationCall) -> Document:
    """A task for the owner to call the customer N days after they became one."""
    return {
        "name": p.name or "Evaluation call",
        "description": f"A call task for the owner {p.days_after} days after a contact "
        "becomes a customer.",
        "trigger": {"type": "lifecycle_changed", "to": "customer"},
        "steps": [
            {"id": "wait", "type": "wait", "duration": {"days": p.days_after}, "next": "task"},
            {
                "id": "task",
                "type": "create_task",
                "title": "Evaluation call with " + LEAD_LINE,
                "description": "How is the first month going? " + p.link,
                "due_in_days": 2,
                "assignee": "owner",
            },
        ],
    }


def renewal_reminder(p: RenewalReminder) -> Document:
    """Before the subscription ends: an email to the contact and a task for the owner."""
    return {
        "name": p.name or "Renewal reminder",
        "description": f"{p.days_before} days before the subscription ends: a reminder email "
        "and a renewal task for the owner.",
        "trigger": {
            "type": "date_relative",
            "field": p.date_field,
            "offset": {"days": -p.days_before},
        },
        "reenrollment": {"policy": "always"},
        "steps": [
            {
                "id": "email",
                "type": "send_email",
                "channel": p.email_channel,
                "purpose": "transactional",
                "subject": "Your subscription renews soon",
                "body": "Hi {{ contact.first_name | default('there') }},\n\nyour subscription "
                f"ends in {p.days_before} days. Reply to this email with any question.",
                "next": "task",
            },
            {
                "id": "task",
                "type": "create_task",
                "title": "Renewal: " + LEAD_LINE,
                "description": f"Subscription ends in {p.days_before} days. " + p.link,
                "due_in_days": 7,
                "assignee": "owner",
            },
        ],
    }


def inactivity_win_back(p: InactivityWinBack) -> Document:
    """After N days without interaction: an email, then a task if it is not opened."""
    return {
        "name": p.name or "Inactivity win-back",
        "description": f"After {p.inactive_days} days without interaction, a win-back email; "
        f"a task for the owner if it is not opened within {p.open_within_days} days.",
        "trigger": {"type": "inactivity", "days": p.inactive_days},
        "reenrollment": {"policy": "always"},
        "steps": [
            {
                "id": "email",
                "type": "send_email",
                "channel": p.email_channel,
                "purpose": "marketing",
                "subject": "We miss you, {{ contact.first_name | default('friend') }}",
                "body": "Hi {{ contact.first_name | default('there') }},\n\nit has been a while. "
                "Here is what is new since your last visit.",
                "next": "opened",
            },
            {
                "id": "opened",
                "type": "wait_for_event",
                "event": "email.opened",
                "timeout": {"days": p.open_within_days},
                "on_timeout": "task",
            },
            {
                "id": "task",
                "type": "create_task",
                "title": "Reach out to inactive contact " + LEAD_LINE,
                "description": "The win-back email was not opened. " + p.link,
                "due_in_days": 3,
                "assignee": "owner",
            },
        ],
    }


def churn_win_back(p: ChurnWinBack) -> Document:
    """By churn reason: budget → an offer, missing feature → a beta invitation, else a task."""
    return {
        "name": p.name or "Churn win-back",
        "description": "When a customer churns: an offer for budget reasons, a beta invitation "
        "for a missing feature, otherwise a task for the owner.",
        "trigger": {"type": "lifecycle_changed", "to": "churned"},
        "reenrollment": {"policy": "always"},
        "steps": [
            {
                "id": "budget",
                "type": "if",
                "condition": {"field": "churn_reason", "op": "eq", "value": "budget"},
                "then": "offer",
                "else": "feature",
            },
            {
                "id": "offer",
                "type": "send_email",
                "channel": p.email_channel,
                "purpose": "marketing",
                "subject": "An offer to come back, {{ contact.first_name | default('friend') }}",
                "body": "Hi {{ contact.first_name | default('there') }},\n\nwe understand budgets "
                "are tight. Come back with three months at half price.",
            },
            {
                "id": "feature",
                "type": "if",
                "condition": {"field": "churn_reason", "op": "eq", "value": "missing_feature"},
                "then": "beta",
                "else": "task",
            },
            {
                "id": "beta",
                "type": "send_email",
                "channel": p.email_channel,
                "purpose": "marketing",
                "subject": "Be the first to try what you asked for",
                "body": "Hi {{ contact.first_name | default('there') }},\n\nyou told us "
                "something was missing. Join the beta and shape it with us.",
            },
            {
                "id": "task",
                "type": "create_task",
                "title": "Win back churned customer " + LEAD_LINE,
                "description": "Churn reason: {{ contact.churn_reason | default('unknown') }}. "
                + p.link,
                "due_in_days": 3,
                "assignee": "owner",
            },
        ],
    }


def product_request_follow_up(p: ProductRequestFollowUp) -> Document:
    """A follow-up task whenever the contact's product requests change."""
    return {
        "name": p.name or "Product request follow-up",
        "description": "A task for the owner when the product requests field changes.",
        "trigger": {"type": "field_changed", "field": p.field},
        "reenrollment": {"policy": "always"},
        "steps": [
            {
                "id": "task",
                "type": "create_task",
                "title": "Follow up on a product request from " + LEAD_LINE,
                "description": "Requested: {{ contact.custom_fields."
                + p.field.removeprefix("custom_fields.")
                + " | default('-') }}. "
                + p.link,
                "due_in_days": 2,
                "assignee": "owner",
            }
        ],
    }


def high_score(p: HighScore) -> Document:
    """Score past the SQL threshold → lifecycle `sql` and a Slack note to the owner."""
    return {
        "name": p.name or "High score: sales-qualified",
        "description": f"When the {p.group} score crosses {p.threshold} upwards, the contact "
        "becomes sales-qualified and the owner hears about it on Slack.",
        "trigger": {
            "type": "score_threshold_crossed",
            "threshold": p.threshold,
            "group": p.group,
            "direction": "up",
        },
        "reenrollment": {"policy": "after_days", "days": 30},
        "steps": [
            {"id": "sql", "type": "set_lifecycle", "stage": "sql", "next": "alert"},
            {
                "id": "alert",
                "type": "send_slack",
                "channel": p.slack_channel,
                "text": ":fire: {{ owner.name | default('Team') }}, "
                + LEAD_LINE
                + " is sales-qualified (score {{ score | default('-') }}). "
                + p.link,
            },
        ],
    }


@dataclass(frozen=True)
class Recipe:
    name: str
    title: str
    params: type[Params]
    build: Callable[[Any], Document]

    @property
    def summary(self) -> str:
        return (self.build.__doc__ or "").strip()


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("new-lead-alert", "New lead alert", NewLeadAlert, new_lead_alert),
        Recipe("welcome", "Welcome and onboarding", Welcome, welcome),
        Recipe("evaluation-call", "Evaluation call", EvaluationCall, evaluation_call),
        Recipe("renewal-reminder", "Renewal reminder", RenewalReminder, renewal_reminder),
        Recipe(
            "inactivity-win-back", "Inactivity win-back", InactivityWinBack, inactivity_win_back
        ),
        Recipe("churn-win-back", "Churn win-back", ChurnWinBack, churn_win_back),
        Recipe(
            "product-request-follow-up",
            "Product request follow-up",
            ProductRequestFollowUp,
            product_request_follow_up,
        ),
        Recipe("high-score", "High score: sales-qualified", HighScore, high_score),
    )
}


class UnknownRecipe(LookupError):
    pass


class InvalidParams(ValueError):
    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__(f"{len(errors)} error(s) in the recipe's parameters")
        self.errors = errors


def document_for(name: str, raw: Any) -> tuple[Document, bool]:
    """The workflow document a recipe makes from its parameters, and whether to enable it."""
    recipe = RECIPES.get(name)
    if recipe is None:
        raise UnknownRecipe(name)
    try:
        params = recipe.params.model_validate(raw or {})
    except ValidationError as exc:
        raise InvalidParams(
            [
                {
                    "field": ".".join(str(p) for p in e["loc"]) or "body",
                    "code": e["type"],
                    "message": e["msg"],
                }
                for e in exc.errors()
            ]
        ) from exc
    return recipe.build(params), params.enabled

"""Pure rules of duplicates and merges: the values a merge keeps, and which contacts may be
one person."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rapidfuzz import fuzz

from services.contacts.domain import MERGEABLE_FIELDS, RuleViolation, email_local_key, is_empty


def choose_merged_values(
    survivor: Mapping[str, Any],
    merged: Mapping[str, Any],
    choices: Mapping[str, str],
) -> dict[str, Any]:
    """The survivor's values after a merge.

    `choices` picks a side per field (`survivor` or `merged`); otherwise the most recently
    updated non-empty value wins. Custom fields merge key by key the same way.
    """
    survivor_newer = survivor["updated_at"] >= merged["updated_at"]
    newer, older = (survivor, merged) if survivor_newer else (merged, survivor)
    unknown = [
        name
        for name in choices
        if name not in MERGEABLE_FIELDS and not name.startswith("custom_fields.")
    ]
    bad_side = [name for name, side in choices.items() if side not in ("survivor", "merged")]
    if unknown or bad_side:
        raise RuleViolation(
            [
                {"field": f"choices.{n}", "code": "unknown_field", "message": "not mergeable"}
                for n in unknown
            ]
            + [
                {"field": f"choices.{n}", "code": "invalid_side", "message": "survivor|merged"}
                for n in bad_side
            ]
        )

    def pick(name: str, a: Any, b: Any, newer_is_survivor: bool) -> Any:
        side = choices.get(name)
        if side == "survivor":
            return a
        if side == "merged":
            return b
        first, second = (a, b) if newer_is_survivor else (b, a)
        return second if is_empty(first) else first

    result: dict[str, Any] = {}
    for name in MERGEABLE_FIELDS:
        result[name] = pick(name, survivor.get(name), merged.get(name), survivor_newer)
    s_custom = survivor.get("custom_fields") or {}
    m_custom = merged.get("custom_fields") or {}
    custom: dict[str, Any] = {}
    for key in dict.fromkeys([*newer.get("custom_fields", {}), *older.get("custom_fields", {})]):
        value = pick(f"custom_fields.{key}", s_custom.get(key), m_custom.get(key), survivor_newer)
        if not is_empty(value):
            custom[key] = value
    result["custom_fields"] = custom
    if result["lifecycle_stage"] != "churned":
        result["churn_reason"] = None
        result["churn_reason_text"] = None
    return result


@dataclass(frozen=True)
class DuplicatePerson:
    id: str
    email: str | None
    phone: str | None
    first_name: str | None
    last_name: str | None
    company: str | None


@dataclass(frozen=True)
class DuplicateCandidate:
    """Two contacts that may be one person, with a 0-100 similarity and why."""

    a: str
    b: str
    score: float
    reasons: tuple[str, ...]


def _full_name(p: DuplicatePerson) -> str:
    return " ".join(x for x in (p.first_name, p.last_name) if x).strip().lower()


def find_duplicates(
    people: Sequence[DuplicatePerson], threshold: float = 85.0
) -> list[DuplicateCandidate]:
    """Candidates beyond exact matches, never merged automatically.

    Blocks people by company, email local-part key and phone's last 8 digits, then scores pairs
    inside each block with rapidfuzz: similar name at the same company, email local-part
    variants (dots, plus-tags, typos at one domain), same phone digits with another email.
    """
    blocks: dict[str, list[DuplicatePerson]] = {}
    for p in people:
        if p.company:
            blocks.setdefault("c:" + p.company.strip().lower(), []).append(p)
        if p.email:
            blocks.setdefault("e:" + email_local_key(p.email), []).append(p)
            blocks.setdefault("d:" + p.email.partition("@")[2], []).append(p)
        if p.phone:
            digits = re.sub(r"\D", "", p.phone)
            blocks.setdefault("p:" + digits[-8:], []).append(p)
    found: dict[tuple[str, str], DuplicateCandidate] = {}
    for key, members in blocks.items():
        if len(members) < 2 or len(members) > 500:
            continue  # a huge block (a free-mail domain) is not a signal by itself
        for i, a in enumerate(members):
            for b in members[i + 1 :]:
                candidate = _compare(a, b, key[0])
                if candidate is None or candidate.score < threshold:
                    continue
                pair = (min(a.id, b.id), max(a.id, b.id))
                previous = found.get(pair)
                if previous is None or previous.score < candidate.score:
                    found[pair] = DuplicateCandidate(
                        pair[0], pair[1], candidate.score, candidate.reasons
                    )
    return sorted(found.values(), key=lambda c: (-c.score, c.a, c.b))


def _compare(a: DuplicatePerson, b: DuplicatePerson, block: str) -> DuplicateCandidate | None:
    if a.id == b.id:
        return None
    name_a, name_b = _full_name(a), _full_name(b)
    if block == "c" and name_a and name_b:
        score = float(fuzz.token_sort_ratio(name_a, name_b))
        return DuplicateCandidate(a.id, b.id, score, ("similar_name_same_company",))
    if block in ("e", "d") and a.email and b.email:
        if email_local_key(a.email) == email_local_key(b.email):
            return DuplicateCandidate(a.id, b.id, 95.0, ("email_local_part_variant",))
        local_a, local_b = a.email.partition("@")[0], b.email.partition("@")[0]
        if block == "d" and min(len(local_a), len(local_b)) >= 5:
            score = float(fuzz.ratio(local_a, local_b))
            if name_a and name_b:
                score = (score + float(fuzz.token_sort_ratio(name_a, name_b))) / 2
            return DuplicateCandidate(a.id, b.id, score, ("email_local_part_variant",))
        return None
    if block == "p" and a.phone and b.phone:
        return DuplicateCandidate(a.id, b.id, 90.0, ("same_phone_other_email",))
    return None

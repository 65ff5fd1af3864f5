"""What the privacy use cases know of a person beyond their contact row."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ErasureSubject:
    """What identifies an erased person beyond their contact id (see `erasure_subject`)."""

    merged_ids: list[str]
    identities: list[str]
    submission_ids: list[str]

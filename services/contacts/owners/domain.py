"""Pure rules of owner assignment: a team's round-robin and smooth weighted rotation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.contacts.domain import violation


@dataclass(frozen=True)
class RotationMember:
    """An owner in a team's rotation, with its weight and smooth-weighted running credit."""

    owner_id: str
    active: bool
    weight: int = 1
    credit: int = 0


def pick_round_robin(members: Sequence[RotationMember], last_owner_id: str | None) -> str:
    """The next active owner after the last one, in the team's fixed order."""
    active = [m for m in members if m.active]
    if not active:
        raise violation("team_id", "no_active_owner", "the team has no active owner")
    order = [m.owner_id for m in members]
    start = order.index(last_owner_id) + 1 if last_owner_id in order else 0
    for i in range(len(members)):
        candidate = members[(start + i) % len(members)]
        if candidate.active:
            return candidate.owner_id
    raise AssertionError("unreachable: an active owner exists")


def pick_weighted(members: Sequence[RotationMember]) -> tuple[str, dict[str, int]]:
    """Smooth weighted round-robin (as nginx): over any window each active owner gets its share.

    Returns the chosen owner and every active member's new credit.
    """
    active = [m for m in members if m.active and m.weight > 0]
    if not active:
        raise violation("team_id", "no_active_owner", "the team has no active owner")
    total = sum(m.weight for m in active)
    credits = {m.owner_id: m.credit + m.weight for m in active}
    chosen = max(active, key=lambda m: (credits[m.owner_id], -active.index(m))).owner_id
    credits[chosen] -= total
    return chosen, credits


@dataclass
class Rotation:
    """A team's rotation as it stands, picking owner after owner: one assignment (a command,
    the API) or every new contact of a captured batch, so both keep one fair count."""

    rule: str  # `round_robin` or `weighted`
    members: list[RotationMember]
    last_owner_id: str | None

    def pick(self) -> str:
        """The next owner; the rotation moves on (last owner, weighted credits)."""
        if self.rule == "weighted":
            chosen, credits = pick_weighted(self.members)
            self.members = [
                RotationMember(m.owner_id, m.active, m.weight, credits.get(m.owner_id, 0))
                for m in self.members
            ]
        else:
            chosen = pick_round_robin(self.members, self.last_owner_id)
        self.last_owner_id = chosen
        return chosen

    def credits(self) -> dict[str, int]:
        """Every member's weighted credit (inactive ones back to 0, as a pick leaves them)."""
        return {m.owner_id: m.credit for m in self.members}


@dataclass(frozen=True)
class TeamOwner:
    """Who an owner in a team's rotation is, so the events of an assignment can name them."""

    id: str
    name: str
    email: str | None


@dataclass
class CaptureTeam:
    """The team whose rotation assigns a workspace's new contacts at capture, as it stands."""

    team_id: str
    rotation: Rotation
    owners: dict[str, TeamOwner]

    def pick(self) -> TeamOwner:
        return self.owners[self.rotation.pick()]

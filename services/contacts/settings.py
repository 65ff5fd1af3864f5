"""Settings of the contacts service (`LEADWIRE_CONTACTS_*` beside the platform's own)."""

from __future__ import annotations

from shared.settings import Settings


class ContactsSettings(Settings):
    """The platform settings plus how often time-based segment membership is reconciled."""

    contacts_segment_sweep_interval_s: float = 60.0


def sweep_interval(settings: Settings) -> float:
    """The sweep interval, also when the app was given plain platform settings."""
    if isinstance(settings, ContactsSettings):
        return settings.contacts_segment_sweep_interval_s
    return ContactsSettings().contacts_segment_sweep_interval_s

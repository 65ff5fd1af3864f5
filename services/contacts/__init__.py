"""contacts: The system of record: one clean contact per person."""

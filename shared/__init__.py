"""Leadwire's platform library: settings, events, bus, database, outbox, inbox, auth, app."""

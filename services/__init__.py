"""Leadwire's five services; `python -m services` is the command line."""

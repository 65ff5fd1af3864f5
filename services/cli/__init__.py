"""The `leadwire` command line's commands beyond running services (see services/__main__.py)."""

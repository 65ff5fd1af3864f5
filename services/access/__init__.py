"""access: the workspace registry and API keys."""

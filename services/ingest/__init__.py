"""ingest: Capture leads from forms, webhooks and the API; publish leads and engagement."""

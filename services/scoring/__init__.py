"""scoring: Score contacts from fit and engagement."""

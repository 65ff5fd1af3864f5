"""scoring's rule sets: their language, validation and evaluation."""

"""scoring's scores: per-group state, exact decay, thresholds with hysteresis, explain."""

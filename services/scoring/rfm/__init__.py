"""scoring's RFM stats and churn risk."""

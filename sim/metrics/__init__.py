"""Metrics: the recorder that observes engine events, summaries with confidence intervals."""

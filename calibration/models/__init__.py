"""Random-weight replicas of real architectures, built from published shapes (no downloads)."""

"""Data pipeline: one sample format, adapters, mixtures, encoding, batching, synthetic data."""

"""Data: Common Voice parsing, audio, ingestion, protocol subsets and the demo corpus. Knows no model and no task."""

"""The errors a user can cause: each message is one line naming the file, row or config key and what is wrong."""

from __future__ import annotations

__all__ = ["ConfigError", "CorpusError", "SubsetError", "ModelError", "ResultsError"]


class ConfigError(ValueError):
    """Invalid configuration; the message is one line naming the key (or sheet row) and the problem."""


class CorpusError(ValueError):
    """Bad or missing corpus input; the message is one line naming the file and what is wrong."""


class SubsetError(ValueError):
    """A subset cannot be drawn or breaks a protocol invariant; one line naming target, locale and why."""


class ModelError(RuntimeError):
    """Model weights cannot be found or prepared; the message is one line saying what and how to fix it."""


class ResultsError(ValueError):
    """A results file lacks a key its writer always writes (stale or edited); one line naming file and key."""

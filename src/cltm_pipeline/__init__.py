"""cltm-pipeline: Cross-Lingual Transfer Matrices for speech tasks on Common Voice."""

__version__ = "0.1.0"

"""anonray: batch video anonymization (faces and licence plates)."""

__version__ = "0.1.0"

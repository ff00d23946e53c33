"""Per-file failures: one exception base for the stages, one value type for the rows they become."""

from __future__ import annotations

from dataclasses import dataclass


class FileFailure(Exception):
    """A failure of one input file (or of one of its segments), never of the run.

    ``error_class`` is a short machine-readable tag (``videos.error_class``); the message names no path of
    anyone's footage. Stages subclass it only to name where it came from.
    """

    def __init__(self, error_class: str, message: str) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.message = message


@dataclass(frozen=True)
class Failure:
    """Why a file or segment failed, as it travels between stages and into its row."""

    error_class: str
    message: str

    @classmethod
    def of(cls, err: BaseException, default_class: str) -> Failure:
        """The failure an exception stands for: a FileFailure's own class, else ``default_class``."""
        error_class = err.error_class if isinstance(err, FileFailure) else default_class
        return cls(error_class, str(err) or type(err).__name__)

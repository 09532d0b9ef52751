"""The exceptions that cross package boundaries and become a job's `{"error": ...}`."""

from __future__ import annotations

from pathlib import Path


class ScailError(Exception):
    """Base of every error the worker reports to the user as a message."""


class InputError(ScailError):
    """The job asked for something invalid; the message names the field and the problem."""


class VolumeFileError(ScailError):
    """A weight file on the model volume is missing or malformed."""

    def __init__(self, path: Path | str, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"model file {self.path}: {problem}")


class JobCancelled(ScailError):
    """Raised from inside a step callback when the job was cancelled."""

    def __init__(self, message: str = "job cancelled"):
        super().__init__(message)

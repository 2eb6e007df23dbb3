"""Errors a user can fix: the CLI prints them as one line (``error: ...``), never a traceback.

Exit codes (``exit_code``): 0 done, 1 failed (the job ran and could not finish: a full disk, a busy folder,
nothing usable in the input), 2 bad usage (a bad option or argument, found before any work), 130 interrupted.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix (wrong argument, busy output folder, empty dataset, ...)."""

    exit_code = 2


class UsageError(UserError, ValueError):
    """A bad option or argument, found before any work and before any folder is created (exit 2)."""

    exit_code = 2


class JobFailed(UserError):
    """The job ran but could not produce a result (for example: nothing in the input decodes) (exit 1)."""

    exit_code = 1


class BusyError(JobFailed):
    """Another process holds the folder's lock (exit 1); the folder is left untouched."""


class OutputError(JobFailed):
    """The output folder cannot be written (disk full, quota, read-only, file too large). A long job stops
    at once instead of recording its inputs as broken; what it committed stays, and a re-run resumes."""

    @classmethod
    def writing(cls, folder: object, exc: OSError) -> OutputError:
        return cls(
            f"cannot write to {folder}: {exc.strerror or exc}; make room (or fix the folder) and re-run the "
            "same command to resume"
        )


def check(ok: bool, message: str) -> None:
    """Raise :class:`UsageError` with ``message`` unless ``ok`` (the options dataclasses' ``validate()``)."""
    if not ok:
        raise UsageError(message)

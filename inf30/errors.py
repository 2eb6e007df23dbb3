"""Errors a user can fix: the CLI prints them as one line (``error: ...``), never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix (wrong argument, busy output folder, empty dataset, ...)."""


class OutputError(UserError):
    """The output folder cannot be written (disk full, quota, read-only, file too large). A long job stops
    at once instead of recording its inputs as broken; what it committed stays, and a re-run resumes."""

    @classmethod
    def writing(cls, folder: object, exc: OSError) -> OutputError:
        return cls(
            f"cannot write to {folder}: {exc.strerror or exc}; make room (or fix the folder) and re-run the "
            "same command to resume"
        )

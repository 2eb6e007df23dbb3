"""Errors a user can fix: the CLI prints them as one line (``error: ...``), never a traceback."""


class UserError(Exception):
    """Something the user can fix (wrong argument, busy output folder, empty dataset, ...)."""

"""User-facing errors. The CLI maps these to exit code 2 with a single line, never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: a recipe, a path, a data file. Message is one line."""


class InputError(UserError):
    """A data file is malformed. ``where`` is ``file:line`` (or ``file``)."""

    def __init__(self, where: str, message: str):
        self.where = where
        super().__init__(f"{where}: {message}")

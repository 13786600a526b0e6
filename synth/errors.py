"""User-facing errors. The CLI maps these to exit code 2 with a single line, never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: a recipe, a path, a data file. Message is one line."""


class InputError(UserError):
    """A data file is malformed. ``where`` is ``file:line`` (or ``file``)."""

    def __init__(self, where: str, message: str):
        self.where = where
        super().__init__(f"{where}: {message}")


class ResumableFailure(UserError):
    """The run stopped part-way for a reason outside the user's input (an endpoint died, a budget was
    reached). Everything finished so far is cached; rerunning the same command resumes."""

    exit_code = 3

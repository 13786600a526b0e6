"""User-facing errors. The CLI maps these to exit code 2 with a single line, never a traceback; file-system
errors and interrupts get one line too (``os_error_line``, ``INTERRUPTED``)."""

from __future__ import annotations

import errno


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


class Interrupted(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that every ``finally`` and temp-folder cleanup runs as for
    Ctrl-C. A KeyboardInterrupt subclass: code that lets Ctrl-C through lets this through too."""


INTERRUPTED = "interrupted: rerun the same command to resume"

# File-system errnos that mean "this path cannot be used", not a bug: one line naming the path.
_FS_ERRNOS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or folder",
    errno.ENOTDIR: "not a folder (a file is in the way)",
    errno.EISDIR: "is a folder (expected a file)",
    errno.EEXIST: "already exists",
    errno.ENOTEMPTY: "folder not empty",
    errno.ENAMETOOLONG: "file name too long",
    errno.EROFS: "read-only file system",
    errno.ELOOP: "too many symbolic links",
    errno.EXDEV: "crosses file systems",
    errno.EMFILE: "too many open files",
    errno.EIO: "input/output error",
}
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def os_error_line(error: BaseException) -> tuple[str, int] | None:
    """One line and an exit code for a file-system error (disk full anywhere in the cause chain: 3,
    a rerun continues from the caches; a path that cannot be used: 2), or None when ``error`` is not one."""
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        chain.append(error)
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    full = next((e for e in chain if isinstance(e, OSError) and e.errno in _NO_SPACE), None)
    if full is None and any("database or disk is full" in str(e) for e in chain):
        full = chain[0]
    if full is not None:
        where = getattr(full, "filename", None) or "the output or cache"
        return f"no space left on device writing {where}: free space and rerun to resume", 3
    first = chain[0]
    if isinstance(first, OSError) and first.errno in _FS_ERRNOS:
        what = _FS_ERRNOS[first.errno]
        if first.filename is None:
            return f"{what} ({first.strerror or first})", 2
        other = f" -> {first.filename2}" if first.filename2 else ""
        return f"{first.filename}{other}: {what}", 2
    return None

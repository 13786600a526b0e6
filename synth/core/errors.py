"""User-facing errors. The CLI maps these to exit code 2 with a single line, never a traceback; file-system
errors, running out of memory and interrupts get one line too (``os_error_line``, ``INTERRUPTED``)."""

from __future__ import annotations

import errno
import re


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
    """SIGTERM or SIGHUP, turned into an exception so that every ``finally`` and temp-folder cleanup runs as for
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
# Writers that lose the errno: numpy's ``tofile``/``np.save`` reports a short write as
# ``OSError("N requested and M written")``, some libraries pass on only the C library's message.
_NO_SPACE_TEXT = ("No space left on device", "Disk quota exceeded", "database or disk is full")
_TOO_LARGE_TEXT = "File too large"
_SHORT_WRITE = re.compile(r"\b(\d+) requested and (\d+) written\b")
OUT_OF_MEMORY_EXIT = 3  # like a full disk: nothing is wrong with the input, a rerun with more room resumes


def exception_chain(error: BaseException | None) -> list[BaseException]:
    """``error`` and what caused it, outermost first (each exception once)."""
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        chain.append(error)
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return chain


def _where(error: BaseException) -> str:
    return getattr(error, "filename", None) or "the output or cache"


def os_error_line(error: BaseException) -> tuple[str, int] | None:
    """One line and an exit code for a file-system error (disk full or a file-size limit anywhere in the
    cause chain: 3, a rerun continues from the caches; a path that cannot be used: 2), for running out of
    memory (3), or None when ``error`` is none of these."""
    chain = exception_chain(error)
    memory = next((e for e in chain if is_out_of_memory(e)), None)
    if memory is not None:
        return memory_error_line(memory), OUT_OF_MEMORY_EXIT
    full = next((e for e in chain if isinstance(e, OSError) and e.errno in _NO_SPACE), None)
    if full is None:
        full = next((e for e in chain if any(text in str(e) for text in _NO_SPACE_TEXT)), None)
    if full is not None:
        return f"no space left on device writing {_where(full)}: free space and rerun to resume", 3
    big = next(
        (e for e in chain if isinstance(e, OSError) and (e.errno == errno.EFBIG or _TOO_LARGE_TEXT in str(e))), None
    )
    if big is not None:
        return (
            f"file too large writing {_where(big)} (a file-size limit, ulimit -f?): "
            "raise the limit or free space and rerun to resume",
            3,
        )
    short = next((e for e in chain if isinstance(e, OSError) and e.errno is None and _SHORT_WRITE.search(str(e))), None)
    if short is not None:  # no errno to tell which: the two causes a short write to a local file has
        m = _SHORT_WRITE.search(str(short))
        return (
            f"could not write {_where(short)} ({m.group(2)} of {m.group(1)} values written): the disk is full "
            "or a file-size limit (ulimit -f) was reached; free space or raise the limit and rerun to resume",
            3,
        )
    first = chain[0]
    if isinstance(first, OSError) and first.errno in _FS_ERRNOS:
        what = _FS_ERRNOS[first.errno]
        if first.filename is None:
            return f"{what} ({first.strerror or first})", 2
        other = f" -> {first.filename2}" if first.filename2 else ""
        return f"{first.filename}{other}: {what}", 2
    return None


_MAP_FAILED = "failed to map segment from shared object"  # dlopen's words when mmap is refused
_ALLOCATOR_TEXT = ("can't allocate memory", "cannot allocate memory", "out of memory")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is running out of memory in any of the forms it takes under a memory limit: Python's
    MemoryError, the kernel's ENOMEM (an import or a file map refused), a shared library that could not be
    mapped (an ImportError without an errno; not a noexec mount, which says \"Operation not permitted\"), and
    torch's allocators (a RuntimeError: \"DefaultCPUAllocator: can't allocate memory\", \"CUDA out of memory\")."""
    if isinstance(error, MemoryError):
        return True
    if isinstance(error, OSError) and error.errno == errno.ENOMEM:
        return True
    text = str(error)
    if isinstance(error, ImportError):
        return _MAP_FAILED in text and "not permitted" not in text
    if type(error) is RuntimeError or type(error).__name__ == "OutOfMemoryError":
        return any(words in text.lower() for words in _ALLOCATOR_TEXT)
    return False


def memory_error_line(error: BaseException) -> str:
    """``out of memory in <the synth function that asked for it>: <detail>`` and what to do. The function
    comes from the traceback (the innermost frame in synth's own code), so no stage has to register."""
    where, tb = None, error.__traceback__
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        if module == "synth" or module.startswith("synth."):
            where = f"{module}.{tb.tb_frame.f_code.co_qualname}"
        tb = tb.tb_next
    detail = " ".join(str(error).split())[:200] or "an allocation failed"
    return (
        f"out of memory{f' in {where}' if where else ''}: {detail}; "
        "free memory or make the data or batch smaller and rerun (finished work is cached)"
    )

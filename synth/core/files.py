"""Files that are written atomically and, under the cache directory, check themselves, shared safely
by concurrent runs.

The one place for "write atomically, verify on open"; every writer goes through it (outputs too:
``atomic_write_bytes/text/json``, ``atomic_file`` for streamed writes, ``atomic_dir`` for folders).
The default cache directory is ``default_cache_dir()``.

- Folders (``cache_subdir``): a cache directory that is a file, or that cannot be written, is a
  one-line ``UserError`` naming it.
- Writing: to a per-process temporary name (pid + random, so two runs never share one), fsync'd,
  then ``os.replace``d into place: a reader sees the old file or the new one, never a partial one.
- Arrays (``save_array`` / ``commit_array`` / ``load_array``): a plain ``.npy`` (numpy, and any
  memmap reader, ignore bytes past the data) followed by a footer: JSON with shape, dtype and the
  blake2b of the data bytes, its length and a magic tag. The check travels in the same file as the
  data, so one rename publishes both and two writers can never pair one's data with the other's
  checksum (a sidecar would need two renames). On open the header must match the footer and the
  expected row count, the file size must be exact, and the data must hash to the footer's digest;
  anything else is a damaged file: one warning line, and the caller recomputes it. Every array is
  checksummed in full on open, the memmapped full matrix too, in 64 MiB slices: blake2b measured
  0.42 GB/s on one core of the 2-core CI machine, so a 1M x 384 fp32 matrix (1.5 GB) costs ~3.6 s,
  against hours of encoding it on those CPUs (a minute or more on a GPU) and the exhaustive search
  that reads it next; the read also warms the page cache for that search.
- JSON (``atomic_write_json`` / ``read_json``): unreadable or not an object → one warning, ``None``, and the
  caller recomputes.
- SQLite (``open_sqlite``): ``PRAGMA quick_check`` on open; a database that is not one or is
  damaged is renamed aside (``NAME.corrupt-<time>``, with its -wal/-shm; nothing is deleted, another
  process may hold it) and a fresh one is started, with one warning. Opening holds an exclusive lock
  on ``NAME.lock``, so two runs never move aside the fresh file the other has just created.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import sqlite3
import struct
import time
from pathlib import Path
from typing import Callable

import numpy as np

from synth.core.errors import UserError
from synth.core.locks import file_lock, sqlite_busy

log = logging.getLogger("synth.cache")

_MAGIC = b"SYNTHCHK"
_TAIL = struct.Struct("<Q8s")  # footer length, magic: the file's last 16 bytes
_BLOCK = 1 << 26  # hash 64 MiB at a time, so a memmapped matrix is never read into memory whole


def cache_subdir(cache_dir: str | Path, *parts: str) -> Path:
    """``cache_dir/parts...``, created; a cache directory we cannot use is a one-line user error."""
    root = Path(cache_dir)
    folder = root.joinpath(*parts)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        steps = [root.joinpath(*parts[:i]) for i in range(len(parts) + 1)]
        blocker = next((p for p in steps if p.exists() and not p.is_dir()), root)
        where = "" if blocker == root else f" ({blocker} is a file)"
        raise UserError(
            f"cache directory {root}: not a folder{where}; set SYNTH_CACHE_DIR or embed.cache_dir"
        ) from None
    except OSError as e:
        raise UserError(f"cache directory {root}: cannot create {folder}: {e.strerror}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"cache directory {root}: not writable ({folder}); set SYNTH_CACHE_DIR or embed.cache_dir")
    return folder


def default_cache_dir() -> Path:
    """Where caches live unless a recipe says otherwise: ``$SYNTH_CACHE_DIR``, else ``~/.cache/synth``."""
    return Path(os.environ.get("SYNTH_CACHE_DIR") or Path.home() / ".cache" / "synth").expanduser()


# -- atomic writes: every file and folder synth publishes goes through these -----------------------
def from_folder(folder: str | Path, value: str | Path) -> Path:
    """``value`` read relative to ``folder`` as the user names it: ``..`` is taken lexically and links are not
    followed, so a recipe in a checkout's ``recipes/`` (a link to synth/assets/recipes) that names
    ``../runs`` means the checkout's runs/, not synth/assets/runs."""
    value = Path(os.path.expanduser(str(value)))
    if value.is_absolute():
        return value
    return Path(os.path.normpath(os.path.join(os.path.abspath(folder), value)))


def tmp_path(path: Path) -> Path:
    """A temporary name beside ``path`` that no other process or thread will pick."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


@contextlib.contextmanager
def atomic_file(path: str | Path, text: bool = False):
    """A file object (bytes; UTF-8 text when ``text``) on a temporary name, renamed to ``path`` when the
    block ends without error; on an error the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    tmp = tmp_path(path)
    try:
        with open(tmp, "w", encoding="utf-8") if text else open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """``data`` at ``path`` (parent folders created), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        f.write(data)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_default(value):
    """``json.dumps`` ``default``: numpy scalars and arrays as plain numbers and lists."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def atomic_write_json(path: str | Path, obj, default: Callable | None = json_default) -> Path:
    """``obj`` as indented JSON at ``path``, atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, default=default))


def swap_dir(tmp: Path, dst: Path, aside: Path | None = None) -> None:
    """Rename the finished folder ``tmp`` onto ``dst``. An existing ``dst`` is first renamed to ``aside``
    (default: a fresh temp name) and removed only once the new one is in place, so ``dst`` is at every
    moment either the old folder or the new one (a folder cannot be renamed over a non-empty one)."""
    aside = aside or tmp_path(dst).with_suffix(".old")
    if dst.exists():
        os.replace(dst, aside)
    os.replace(tmp, dst)
    if aside.exists():
        shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path):
    """A fresh temporary folder beside ``path``; when the block ends without error it replaces ``path``
    (``swap_dir``); on an error it is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    try:
        tmp.mkdir()
        yield tmp
        swap_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- arrays ---------------------------------------------------------------------------------------
def _hash_rows(h, array: np.ndarray) -> None:
    step = max(1, _BLOCK // max(1, array[:1].nbytes))
    for s in range(0, len(array), step):
        h.update(np.ascontiguousarray(array[s : s + step]).data.cast("B"))


def new_digest():
    return hashlib.blake2b(digest_size=16)


def _append_footer(f, array_shape, dtype: np.dtype, digest: str) -> None:
    meta = json.dumps({"shape": list(array_shape), "dtype": np.dtype(dtype).str, "blake2b": digest}).encode()
    f.write(meta)
    f.write(_TAIL.pack(len(meta), _MAGIC))


def save_array(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` with its checking footer, atomically."""
    array = np.ascontiguousarray(array)
    h = new_digest()
    _hash_rows(h, array)
    with atomic_file(Path(path)) as f:
        np.save(f, array)
        _append_footer(f, array.shape, array.dtype, h.hexdigest())


def commit_array(tmp: Path, path: Path, digest) -> None:
    """Publish a matrix written to ``tmp`` with ``np.lib.format.open_memmap`` (flushed and closed);
    ``digest`` has been fed its rows in order."""
    try:
        arr = np.load(tmp, mmap_mode="r")
        shape, dtype = arr.shape, arr.dtype
        del arr
        with open(tmp, "ab") as f:
            _append_footer(f, shape, dtype, digest.hexdigest())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _check_array(path: Path, rows: int | None) -> np.memmap:
    # one open file for footer, header and data: a file renamed over ``path`` meanwhile cannot mix in
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        if size < _TAIL.size:
            raise ValueError(f"{size} bytes, too short")
        f.seek(size - _TAIL.size)
        n, magic = _TAIL.unpack(f.read(_TAIL.size))
        if magic != _MAGIC or n > size - _TAIL.size:
            raise ValueError("no checksum footer (truncated, or not written by synth)")
        f.seek(size - _TAIL.size - n)
        meta = json.loads(f.read(n))
        f.seek(0)
        version = np.lib.format.read_magic(f)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        shape, fortran, dtype = read_header[version](f)
        offset = f.tell()
        if list(shape) != meta["shape"] or dtype.str != meta["dtype"] or fortran:
            raise ValueError(f"header {shape} {dtype.str} does not match footer {meta['shape']} {meta['dtype']}")
        if rows is not None and shape[0] != rows:
            raise ValueError(f"{shape[0]} rows, expected {rows}")
        nbytes = int(np.prod(shape)) * dtype.itemsize
        if offset + nbytes + n + _TAIL.size != size:
            raise ValueError(f"{size} bytes, expected {offset + nbytes + n + _TAIL.size}")
        arr = np.memmap(f, dtype=dtype, mode="r", offset=offset, shape=shape)
    h = new_digest()
    _hash_rows(h, arr)
    if h.hexdigest() != meta["blake2b"]:
        raise ValueError("checksum mismatch")
    return arr


def load_array(path: str | Path, rows: int | None = None, mmap: bool = False) -> np.ndarray | None:
    """The checked array at ``path`` (a read-only memmap when ``mmap``), or ``None`` when it is absent
    or damaged (then with one warning): either way the caller computes it again."""
    path = Path(path)
    try:
        arr = _check_array(path, rows)
    except FileNotFoundError:
        return None
    except Exception as e:  # whatever fails while reading a cache file, the cure is to recompute it
        if path.exists():  # else another run removed it meanwhile: a plain miss, not damage
            warn_damaged(path, e)
        return None
    return arr if mmap else np.array(arr)


def warn_damaged(path: Path, problem, action: str = "recomputing it") -> None:
    text = str(problem).splitlines()[0] if str(problem) else type(problem).__name__
    log.warning("damaged cache file %s (%s); %s", path, text, action)


# -- JSON -----------------------------------------------------------------------------------------
def read_json(path: str | Path) -> dict | None:
    """The JSON object at ``path``, or ``None`` when it is absent or damaged (then with one warning)."""
    path = Path(path)
    try:
        obj = json.loads(path.read_bytes())
        if not isinstance(obj, dict):
            raise ValueError(f"expected a JSON object, found {type(obj).__name__}")
        return obj
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        warn_damaged(path, e)
        return None


# -- SQLite ---------------------------------------------------------------------------------------
class _Damaged(sqlite3.DatabaseError):
    pass


def _is_damage(e: sqlite3.DatabaseError) -> bool:
    # SQLITE_CORRUPT (11) and SQLITE_NOTADB (26); "database is locked" and the like are not damage
    code = getattr(e, "sqlite_errorcode", None)
    if isinstance(e, _Damaged) or (code is not None and code & 0xFF in (11, 26)):
        return True
    return code is None and not isinstance(e, sqlite3.OperationalError)


def _locked(path: Path):
    """``NAME.lock`` held for the block, waiting at most SYNTH_LOCK_TIMEOUT (``synth.core.locks``)."""
    return file_lock(path.with_name(path.name + ".lock"), str(path))


def _connect_checked(path: Path, setup: Callable[[sqlite3.Connection], None], kw: dict) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), **kw)
    try:
        result = db.execute("PRAGMA quick_check(1)").fetchone()[0]
        if result != "ok":
            raise _Damaged(f"quick_check: {result}")
        setup(db)
    except BaseException:
        db.close()
        raise
    return db


def open_sqlite(path: str | Path, setup: Callable[[sqlite3.Connection], None], **connect_kw) -> sqlite3.Connection:
    """A connection to the checked database at ``path``; ``setup`` sets pragmas and creates tables.
    A damaged database is moved aside and replaced by a fresh one."""
    path = Path(path)
    with _locked(path):
        try:
            return sqlite_busy(lambda: _connect_checked(path, setup, connect_kw), str(path))
        except sqlite3.DatabaseError as e:
            if not _is_damage(e):
                raise
            stamp = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{secrets.token_hex(2)}"  # never over an older one
            aside = path.with_name(f"{path.name}.corrupt-{stamp}")
            for suffix in ("", "-wal", "-shm"):  # the old WAL must not be replayed into the new file
                with contextlib.suppress(FileNotFoundError):
                    os.replace(f"{path}{suffix}", f"{aside}{suffix}")
            warn_damaged(path, e, f"moved to {aside.name}, starting a fresh one")
            return sqlite_busy(lambda: _connect_checked(path, setup, connect_kw), str(path))

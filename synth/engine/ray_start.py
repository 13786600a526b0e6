"""Starting or joining the Ray cluster with a deadline, and refusing at start what the cluster can never run.

No Ray import here (``synth.engine.ray_engine`` stays the only module that imports Ray): the functions that
call Ray take the ``ray`` module as an argument.

- A joined cluster (``auto``, ``host:port``, ``ray://``) is connected in a daemon thread that the driver
  abandons after ``limit("ray_start_timeout")`` seconds; a ``host:port`` is first probed with a plain TCP
  connect, so a closed port is one line at once instead of Ray's own reconnect loop.
- A started cluster (``local``) needs Unix socket paths under the temp folder Ray uses; a folder too long
  for them is one line before Ray starts (Ray's own error is a traceback).
- Ray installs its own SIGTERM handler in ``ray.init`` (it drains the node for up to ~20 s and exits
  without a word); ``signals_kept`` puts the driver's handlers back, so the CLI says ``interrupted``.
- ``check_fits``: settings that no node or the whole cluster can ever satisfy (an actor larger than every
  node, more actors or corpus shards at once than the cluster has CPUs) would wait forever; they are
  refused with one line naming the field and the cluster's resources.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from synth.core.errors import ResumableFailure, UserError
from synth.core.limits import LIMITS, limit

log = logging.getLogger("synth.engine")

# An AF_UNIX path is at most 108 bytes with its NUL on Linux (104 on macOS), as Ray checks itself.
SOCKET_PATH_MAX = 103 if sys.platform.startswith("darwin") else 107
# The longest socket Ray puts under its temp folder: <tmp>/ray/session_<date>_<time>_<us>_<pid>/sockets/plasma_store
_SESSION = "session_2000-01-01_00-00-00_000000_" + "9" * 7
# ray.shutdown of a cluster this run started stops its processes; past this, the run leaves and Ray's
# process reaper finishes the job (a bound for close, so an interrupted run exits promptly).
SHUTDOWN_SECONDS = 20.0


def first_line(error: BaseException) -> str:
    """An exception's first line, for a one-line error."""
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:300]


def ray_temp_folder() -> tuple[str, str]:
    """The folder a started Ray cluster puts its sockets under, and the variable that chose it (as Ray does:
    RAY_TMPDIR, else TMPDIR on Linux, else /tmp)."""
    if "RAY_TMPDIR" in os.environ:
        return os.environ["RAY_TMPDIR"], "RAY_TMPDIR"
    if sys.platform.startswith("linux") and "TMPDIR" in os.environ:
        return os.environ["TMPDIR"], "TMPDIR"
    return "/tmp", ""


def check_socket_folder() -> None:
    """One line (before Ray starts) when Ray's socket paths under its temp folder would be too long."""
    folder, variable = ray_temp_folder()
    longest = os.path.join(folder, "ray", _SESSION, "sockets", "plasma_store")
    size = len(longest.encode("utf-8"))
    if size > SOCKET_PATH_MAX:
        room = SOCKET_PATH_MAX - (size - len(folder.encode("utf-8")))
        shown = folder if len(folder) <= 80 else folder[:77] + "..."
        raise UserError(
            f"{variable or 'the temp folder'} {shown!r}: too long for the Unix sockets of a local Ray cluster "
            f"({len(folder.encode('utf-8'))} bytes; at most {room}): set RAY_TMPDIR to a shorter folder, e.g. /tmp"
        )


def probe(address: str, seconds: float) -> None:
    """A TCP connect to a ``host:port`` (or ``ray://host:port``) address: one line when nothing listens."""
    match = re.fullmatch(r"(?:ray://)?(?:[^@/]*@)?([^\s:/@]+):(\d{1,5})", address)
    if match is None:
        return  # 'auto': Ray finds the address itself (RAY_ADDRESS or the cluster started on this machine)
    host, port = match.group(1), int(match.group(2))
    try:
        with socket.create_connection((host, port), timeout=seconds):
            pass
    except OSError as e:
        raise ResumableFailure(
            f"ray: cannot reach the cluster at engine.address {address!r}: {host}:{port} "
            f"({e.strerror or first_line(e)}); is the cluster running, and reachable from here?"
        ) from None


def join_with_deadline(ray, address: str, init: Callable[[], object]) -> None:
    """Run ``init`` (a ``ray.init`` joining ``address``) in a daemon thread; give up after
    ``limit("ray_start_timeout")`` seconds with one line naming ``engine.address``."""
    seconds = limit("ray_start_timeout")
    deadline = time.monotonic() + seconds
    probe(address, seconds)
    outcome: dict = {}

    def connect() -> None:
        try:
            init()
        except BaseException as e:  # noqa: BLE001 - carried to the driver's thread, classified there
            outcome["error"] = e

    thread = threading.Thread(target=connect, name="synth-ray-connect", daemon=True)
    with _quiet_thread_warning():
        thread.start()
        thread.join(max(0.0, deadline - time.monotonic()))
    if thread.is_alive():
        # The connect never returned: nothing was connected, so Ray's exit hook has nothing to stop (and
        # would wait on the abandoned connect's lock at exit).
        atexit.unregister(ray.shutdown)
        raise ResumableFailure(
            f"ray: no answer from the cluster at engine.address {address!r} within {seconds:g} s "
            f"({LIMITS['ray_start_timeout'].env}); is it a Ray cluster, and reachable from here?"
        )
    error = outcome.get("error")
    if error is not None:
        if isinstance(error, UserError):
            raise error
        raise ResumableFailure(
            f"ray: cannot reach the cluster at engine.address {address!r} ({first_line(error)}) during start"
        ) from None


class _DropThreadWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "not the main thread" not in record.getMessage()


@contextmanager
def _quiet_thread_warning() -> Iterator[None]:
    """Ray warns that a connect from a thread sets no SIGTERM handler: synth wants none (``signals_kept``)."""
    logger = logging.getLogger("ray._private.worker")
    dropped = _DropThreadWarning()
    logger.addFilter(dropped)
    try:
        yield
    finally:
        logger.removeFilter(dropped)


@contextmanager
def signals_kept() -> Iterator[None]:
    """The driver's SIGINT/SIGTERM handlers as they were before the block (``ray.init`` replaces SIGTERM's)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            if handler is not None and signal.getsignal(signum) is not handler:
                signal.signal(signum, handler)


def shutdown_with_deadline(ray) -> None:
    """``ray.shutdown()`` for at most ``SHUTDOWN_SECONDS``: a hung shutdown never holds the run's exit."""
    thread = threading.Thread(target=ray.shutdown, name="synth-ray-shutdown", daemon=True)
    thread.start()
    thread.join(SHUTDOWN_SECONDS)
    if thread.is_alive():
        log.warning("ray: the cluster did not stop within %g s; leaving it to Ray's process reaper", SHUTDOWN_SECONDS)


def node_resources(ray) -> list[dict]:
    """Each alive node's total resources."""
    return [dict(n.get("Resources") or {}) for n in ray.nodes() if n.get("Alive")]


def describe(nodes: list[dict]) -> str:
    cpus = sum(n.get("CPU", 0) for n in nodes)
    gpus = sum(n.get("GPU", 0) for n in nodes)
    largest = max((n.get("CPU", 0) for n in nodes), default=0)
    return f"{len(nodes)} node(s), {cpus:g} CPUs (largest node {largest:g}), {gpus:g} GPUs"


def check_fits(cfg, nodes: list[dict], address: str) -> None:
    """Refuse settings the cluster can never satisfy: each would leave actors pending, the run waiting.
    Checked against the nodes up when the cluster is reached: an autoscaling cluster has its nodes up
    first (min workers), as the error line says."""
    where = f"the cluster at engine.address {address!r}: {describe(nodes)}"
    if address == "local":
        hint = "; or raise engine.num_cpus"
    else:
        hint = "; an autoscaling cluster must have its nodes up before synth joins"
    largest_cpu = max((n.get("CPU", 0) for n in nodes), default=0)
    if cfg.actor_cpus > largest_cpu:
        raise UserError(f"engine.actor_cpus: {cfg.actor_cpus:g} CPUs per actor, more than any node has ({where}){hint}")
    if cfg.actor_gpus:
        largest_gpu = max((n.get("GPU", 0) for n in nodes), default=0)
        if cfg.actor_gpus > largest_gpu:
            raise UserError(
                f"engine.actor_gpus: {cfg.actor_gpus:g} GPUs per actor, more than any node has ({where})"
                + ("" if address == "local" else hint)
            )
    total = sum(n.get("CPU", 0) for n in nodes)
    for field, count in (("actors", cfg.actors), ("corpus_shards", cfg.corpus_shards)):
        need = count * cfg.actor_cpus
        if need > total + 1e-9:
            raise UserError(
                f"engine.{field}: {count} actors of {cfg.actor_cpus:g} CPUs (engine.actor_cpus) must run at "
                f"once, {need:g} CPUs; {where}: lower engine.{field} or engine.actor_cpus{hint}"
            )


@contextmanager
def stderr_muted():
    """File descriptor 2 to /dev/null while Ray connects: its C++ core prints a line there when it reads
    RAY_BACKEND_LOG_LEVEL. Errors of ``ray.init`` still arrive, as exceptions."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def say_joined(ray, nodes: list[dict]) -> None:
    """``auto`` joins whatever cluster Ray finds (RAY_ADDRESS, or one started on this machine, maybe for
    another job): say which, and what it has free now, in one line."""
    try:
        gcs = ray.get_runtime_context().gcs_address
        free = ray.available_resources()
    except Exception:  # noqa: BLE001 - the notice is best effort; the stall deadline still bounds the run
        gcs, free = "?", {}
    log.warning(
        "ray: engine.address 'auto' joined the running cluster at %s, not started by this run (%s; free now: "
        "%g CPUs, %g GPUs); actors wait for free resources at most %s s (SYNTH_RAY_STALL_TIMEOUT)",
        gcs, describe(nodes), free.get("CPU", 0), free.get("GPU", 0), f"{limit('ray_stall_timeout'):g}",
    )  # fmt: skip

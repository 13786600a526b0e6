"""Every wait on Ray with a deadline and progress.

A stage waits on Ray in short slices (``POLL_SECONDS``): each slice notes whether a task finished, says
on the log every ``HEARTBEAT_SECONDS`` what it is still waiting for, and stops the run with one
``ResumableFailure`` line when no task finished for ``limit("ray_stall_timeout")`` seconds (actors that
can never be placed, a restarted actor that never gets its task back, a cluster that went quiet). What
finished is on storage, so a rerun resumes.

No Ray import here: the functions that call Ray take the ``ray`` module as an argument.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable, Iterable, Iterator

from synth.core.errors import ResumableFailure
from synth.core.limits import LIMITS, limit

log = logging.getLogger("synth.engine")

IN_FLIGHT_PER_ACTOR = 2  # items queued per actor: one computing, one arriving
POLL_SECONDS = 1.0  # how often a wait wakes to check its deadline
HEARTBEAT_SECONDS = 60.0  # a "still waiting" log line this often while nothing finishes


class Stall:
    """One stage's progress: ``progress()`` when a task finishes; ``check()`` raises once none finished for
    ``ray_stall_timeout`` seconds, naming the stage and what it waits for (``waiting_on()``)."""

    def __init__(self, stage: str, unit: str, total: int | None = None, waiting_on: Callable[[], str] | None = None):
        self.stage, self.unit, self.total = stage, unit, total
        self.waiting_on = waiting_on or (lambda: "")
        self.seconds = limit("ray_stall_timeout")
        self.done = 0
        self.seen: set = set()  # finished refs counted while still in flight
        self.last = self.beat = time.monotonic()

    def finished(self, refs: list, forget: bool = False) -> None:
        """Count the finished task refs not counted yet; ``forget``: they leave the wait (memory stays small)."""
        new = [ref for ref in refs if ref not in self.seen]
        if new:
            self.progress(len(new))
        if forget:
            self.seen.difference_update(refs)
        else:
            self.seen.update(new)

    def progress(self, n: int = 1) -> None:
        self.done += n
        self.last = self.beat = time.monotonic()

    def _state(self) -> str:
        done = f"{self.done} of {self.total}" if self.total is not None else str(self.done)
        what = self._waiting_on()
        return f"{done} {self.unit} done" + (f"; {what}" if what else "")

    def _waiting_on(self) -> str:
        try:
            return self.waiting_on()
        except Exception as e:  # noqa: BLE001 - the diagnosis must never hide the stall itself
            return f"(no detail: {type(e).__name__})"

    def check(self) -> None:
        now = time.monotonic()
        idle = now - self.last
        if idle >= self.seconds:
            raise ResumableFailure(
                f"ray: nothing finished for {idle:.0f} s during {self.stage} ({self._state()}); "
                f"{LIMITS['ray_stall_timeout'].env}={self.seconds:g} s; finished shards are kept, rerun to resume"
            )
        if now - self.beat >= HEARTBEAT_SECONDS:
            self.beat = now
            log.info("ray: %s still waiting, nothing finished for %.0f s (%s)", self.stage, idle, self._state())


def get_with_deadline(ray, refs: list, stall: Stall, others: Callable[[], list] = list) -> list:
    """``ray.get(refs)`` in ``POLL_SECONDS`` slices, with ``stall`` checked between them. A task among
    ``others()`` (the rest in flight) that finishes meanwhile counts as progress too."""
    while True:
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=POLL_SECONDS)
        if len(ready) == len(refs):
            stall.finished(refs, forget=True)
            return ray.get(refs)
        rest = others()
        stall.finished(ready + (ray.wait(rest, num_returns=len(rest), timeout=0)[0] if rest else []))
        stall.check()


def iterate_with_deadline(items: Iterable, stall: Stall, name: str) -> Iterator:
    """The items of a blocking iterable (a Ray Data iterator), pulled in a daemon thread so the wait for
    each one can end: ``stall`` is checked while none arrives. The caller counts progress."""
    channel: queue.Queue = queue.Queue(maxsize=4)
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                channel.put(entry, timeout=POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def pump() -> None:
        try:
            for item in items:
                if not put(("item", item)):
                    return
            put(("end", None))
        except BaseException as e:  # noqa: BLE001 - re-raised in the driver's thread
            put(("error", e))

    thread = threading.Thread(target=pump, name=f"synth-ray-{name}", daemon=True)
    thread.start()
    try:
        while True:
            try:
                kind, value = channel.get(timeout=POLL_SECONDS)
            except queue.Empty:
                stall.check()
                continue
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()


def actors_waiting(ray, ready_refs: list, cpus: float, gpus: float) -> str:
    """What a pool waits for: its actors not started yet, with what each needs and what the cluster has free."""
    if not ready_refs:
        return ""
    started, _ = ray.wait(ready_refs, num_returns=len(ready_refs), timeout=0)
    pending = len(ready_refs) - len(started)
    free = ray.available_resources()
    have = f"cluster free: {free.get('CPU', 0):g} CPUs, {free.get('GPU', 0):g} GPUs"
    if pending:
        return f"{pending} of {len(ready_refs)} actors not started, each needs {cpus:g} CPUs and {gpus:g} GPUs; {have}"
    return f"all {len(ready_refs)} actors started; {have}"


def root_cause(ray, error: BaseException) -> BaseException:
    """The exception a worker raised, through Ray's wrappers (``RayTaskError.cause``, and Ray Data's
    ``UserCodeException`` raised from the worker's exception)."""
    for _ in range(8):
        if isinstance(error, ray.exceptions.RayTaskError) and getattr(error, "cause", None) is not None:
            error = error.cause
        elif isinstance(error, ray.exceptions.UserCodeException) and error.__cause__ is not None:
            error = error.__cause__
        else:
            break
    return error

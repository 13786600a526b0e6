"""A local Ray cluster for the tests: loopback only, ``num_cpus`` declared above the real count (actors take
fractional CPUs, so 2 cores never deadlock), dashboard and usage stats off, auth disabled.

``local_cluster()`` starts it in this (pytest) process with ``ray.init``; in-process engines use it as it is
(a ``RayEngine`` finding Ray initialised neither starts nor stops anything), and CLI runs in subprocesses
join it with ``--set engine.address=<the address it yields>``. It stops with ``ray.shutdown()`` when the
block ends: never ``ray stop``, which would kill every Ray cluster of the user on the machine.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Iterator

# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: Ray then binds 127.0.0.1 instead of the machine's address (it is read
# when ray is first imported, so this module sets it on import: import it before ray).
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_BACKEND_LOG_LEVEL": "fatal",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_worker_niceness": "0",  # Ray's default 15 starves the workers on a loaded machine (as the engine sets)
}
for _key, _value in RAY_ENV.items():
    os.environ.setdefault(_key, _value)


def cluster_cpus() -> int:
    return max(8, 4 * (os.cpu_count() or 1))


@contextmanager
def local_cluster() -> Iterator[str]:
    """Start the test cluster; yields its GCS address (``127.0.0.1:<port>``) for ``engine.address``."""
    import ray

    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    context = ray.init(
        address="local",
        num_cpus=cluster_cpus(),
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    try:
        address = context.address_info["gcs_address"]
        assert address.startswith("127.0.0.1:"), f"the test cluster must listen on loopback only, not {address}"
        yield address
    finally:
        ray.shutdown()


class Echo:
    """A plain worker for ``map_actors`` tests: returns (item, its own pid); later items finish first."""

    def __init__(self, delay: float):
        self.delay = delay

    def __call__(self, item: int) -> tuple[int, int]:
        import time

        time.sleep(self.delay * (item % 3 == 0))
        return item, os.getpid()


class Idle:
    """An actor that only holds the resources it was given: another job's work on a shared cluster."""

    def ping(self) -> bool:
        return True


# A driver in its own process: joins ``engine.address`` (argv[1]) with the engine's log on stderr, maps Echo
# over two items and prints the one line it ended with.
ECHO_DRIVER = """
import logging, sys
from synth.core.errors import UserError
from synth.engine.config import RayEngineConfig
from synth.engine.ray_engine import RayEngine
from tests.support.ray_cluster import Echo

logging.basicConfig(level=logging.INFO, format="%(message)s")
engine = RayEngine(RayEngineConfig(address=sys.argv[1]))
try:
    print("done", list(engine.map_actors(Echo, {"delay": 0}, [1, 2], label="echo")))
except UserError as e:
    print(f"{type(e).__name__}: {e}")
finally:
    engine.close()
"""


def actor_processes(marker: str) -> list:
    """This process's descendants (the test cluster's workers) whose title (``ray::<actor>...``) names ``marker``."""
    import psutil

    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            title = " ".join(proc.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if title.startswith("ray::") and marker in title:
            found.append(proc)
    return found


class Dies:
    """A worker whose process exits on item ``fatal`` (every time: a restarted actor dies again), and raises a
    ``UserError`` on item ``refuse``."""

    def __init__(self, fatal: int, refuse: int):
        self.fatal, self.refuse = fatal, refuse

    def __call__(self, item: int) -> int:
        if item == self.fatal:
            os._exit(1)
        if item == self.refuse:
            from synth.core.errors import UserError

            raise UserError(f"item {item}: refused")
        return item

"""``os_error_line``: the one line for file-system failures and running out of memory, on real errors (a
write to /dev/full, a real failed allocation), including the ones that lose their errno on the way."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

from synth.core.errors import os_error_line
from synth.report.run import RunReport
from synth.pipeline.run import zero_rows_reason
from tests.support.reports import RESA2, judged, leakage_checked

FULL = "/dev/full"  # every write fails with ENOSPC
needs_dev_full = pytest.mark.skipif(not os.path.exists(FULL), reason="no /dev/full on this system")


def _raised(fn) -> BaseException:
    try:
        fn()
    except BaseException as e:  # noqa: BLE001 - the error itself is under test
        return e
    raise AssertionError("expected an error")


@needs_dev_full
def test_full_disk_with_errno_is_exit_3():
    def write():
        with open(FULL, "wb") as f:
            np.save(f, np.zeros((1000, 384), np.float32))

    line, code = os_error_line(_raised(write))
    assert code == 3 and line.startswith("no space left on device"), line


@needs_dev_full
def test_full_disk_short_write_without_errno_is_exit_3():
    """numpy's ``tofile`` reports a full disk as ``OSError("N requested and M written")``, no errno."""

    def write():
        with open(FULL, "wb", buffering=0) as f:
            np.zeros(100_000, np.float32).tofile(f)

    error = _raised(write)
    assert isinstance(error, OSError) and error.errno is None, repr(error)  # the case the line must still catch
    line, code = os_error_line(error)
    assert code == 3 and "the disk is full or a file-size limit" in line and "0 of 100000 values written" in line, line


def test_errno_less_messages_and_file_too_large():
    line, code = os_error_line(RuntimeError("sqlite: database or disk is full"))
    assert code == 3 and line.startswith("no space left"), line
    line, code = os_error_line(OSError(errno.EFBIG, os.strerror(errno.EFBIG), "/data/x.npy"))
    assert code == 3 and "file too large writing /data/x.npy" in line and "ulimit -f" in line, line
    wrapped = _raised(lambda: _reraise(OSError("Disk quota exceeded")))
    assert os_error_line(wrapped)[1] == 3  # found anywhere in the cause chain


def _reraise(error: BaseException) -> None:
    try:
        raise error
    except OSError as e:
        raise ValueError("while writing the index") from e


def test_a_real_failed_allocation_is_one_line_exit_3():
    error = _raised(lambda: np.empty(1 << 50, np.uint8))  # a petabyte: no machine grants it
    assert isinstance(error, MemoryError)
    line, code = os_error_line(error)
    assert code == 3 and line.startswith("out of memory: ") and "\n" not in line, line


def test_every_form_of_running_out_of_memory_is_one_line_exit_3():
    """A memory limit shows as torch's allocator error, the kernel's ENOMEM on an import or a map, or a shared
    library that could not be mapped; each is the same condition as a MemoryError (the CI machine met the
    second while importing mpmath under ``ulimit -v``)."""
    import torch

    failures = [
        _raised(lambda: torch.empty(1 << 50, dtype=torch.uint8)),  # the real CPU allocator, a petabyte
        OSError(errno.ENOMEM, "Cannot allocate memory", "/site-packages/mpmath/matrices"),
        ImportError("libtorch_cpu.so: failed to map segment from shared object"),
    ]
    for failure in failures:
        line, code = os_error_line(_wrapped(failure))
        assert code == 3 and line.startswith("out of memory: ") and "\n" not in line, line


def _wrapped(error: BaseException) -> BaseException:
    """``error`` as the cause of another, as it reaches the CLI from inside a library."""
    try:
        try:
            raise error
        except BaseException as e:
            raise ValueError("while loading the model") from e
    except ValueError as outer:
        return outer


def test_other_errors_are_not_classified():
    assert os_error_line(ValueError("a bug")) is None
    assert os_error_line(OSError("something else")) is None
    assert os_error_line(RuntimeError("shape mismatch")) is None
    # a noexec mount stops a library from mapping too, but that is not memory
    assert os_error_line(ImportError("x.so: failed to map segment from shared object: Operation not permitted")) is None


def test_zero_rows_reason_names_leakage_and_failed_judges():
    report = judged(RESA2)
    report["output"] = {**report["output"], "pairs": 8, "rows": 0}
    report["leakage"] = leakage_checked(pairs_dropped=8)
    risk = {**report["judging"]["stages"][0], "candidates": 40, "failed": 40}
    report["judging"]["stages"] = [risk, {**risk, "stage": "llm", "kind": "llm_listwise", "failed": 0}]
    reason = zero_rows_reason(RunReport.model_validate(report))
    assert reason.startswith("all 8 pairs dropped by the leakage check against beir (split test")
    assert "the judge stage 'risk' failed closed on all 40 candidates" in reason and "'llm'" not in reason

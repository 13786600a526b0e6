"""Which device a GPU-capable step runs on, decided without loading torch where no GPU can be."""

from __future__ import annotations

import glob
import os
import sys

from synth.core.errors import UserError


def resolve_device(requested: str) -> str:
    if requested == "cpu" or (requested == "auto" and not gpu_possible()):
        return "cpu"
    import torch

    has_gpu = torch.cuda.is_available()
    if requested == "cuda" and not has_gpu:
        raise UserError("index.device: cuda requested but torch sees no GPU")
    return "cuda" if has_gpu else "cpu"


def gpu_possible() -> bool:
    """False when this Linux machine has no GPU driver or device node at all, so ``auto`` is CPU without
    importing torch (1.5 s of every warm run's start, to learn what ``/dev`` already says). Anywhere else, or
    with torch already loaded, torch is asked."""
    if "torch" in sys.modules or not sys.platform.startswith("linux"):
        return True
    nodes = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/kfd", "/dev/dxg")  # NVIDIA, ROCm, WSL
    return any(os.path.exists(p) for p in nodes) or bool(glob.glob("/dev/nvidia[0-9]*"))

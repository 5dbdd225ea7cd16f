"""What a worker trains on and which queues it serves, as it reports itself."""

from __future__ import annotations

import os
from dataclasses import dataclass

from service.core.config import Settings
from service.core.queueing import CPU, GPU, parse_queues


@dataclass(frozen=True)
class WorkerProfile:
    """The engine's device name, how the worker describes it, and its queues (preferred first)."""

    device: str
    description: str
    queues: list[str]


def worker_profile(settings: Settings) -> WorkerProfile:
    """This process's profile from the settings and the hardware.

    A CUDA worker prefers GPU jobs; a CPU worker prefers CPU jobs but, unless told
    otherwise (``DPSYNTH_WORKER_QUEUES=cpu``), also runs GPU jobs so that a deployment
    without GPUs runs every job.

    Raises:
        RuntimeError: CUDA was asked for but is not there.
        ValueError: ``DPSYNTH_WORKER_QUEUES`` names an unknown queue.
    """
    import torch

    device = settings.worker_device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("DPSYNTH_WORKER_DEVICE=cuda but no CUDA device is available")
        index = torch.cuda.current_device()
        description = f"cuda:{index} {torch.cuda.get_device_name(index)}"
    else:
        description = f"cpu ({os.cpu_count()} cores)"
    default = [GPU, CPU] if device == "cuda" else [CPU, GPU]
    queues = parse_queues(settings.worker_queues) if settings.worker_queues else default
    return WorkerProfile(device=device, description=description, queues=queues)

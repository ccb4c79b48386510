"""Where compute runs: CUDA when present, else CPU, from the same code path."""
from __future__ import annotations

import os
import random

import numpy as np
import torch


def get_device(prefer: str | None = None) -> torch.device:
    """The device to compute on: `prefer` if given ('cpu', 'cuda'), else CUDA when available, else CPU.

    The environment variable PRIVACY_AUDIT_DEVICE overrides the automatic choice (useful to force CPU in tests).
    """
    choice = prefer or os.environ.get("PRIVACY_AUDIT_DEVICE")
    if choice:
        if choice.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"device {choice!r} was requested but no CUDA GPU is available")
        return torch.device(choice)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int, device: torch.device | None = None) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so the same inputs give the same numbers.

    On the CPU, torch also switches to its deterministic algorithms: the backward of `table[users]` otherwise sums
    the gradients of repeated users in thread order, and adversarial training (Adv-InT) amplifies that rounding
    into different attacker AUCs. They cost nothing measurable here. On CUDA (`device`, else the default device)
    the choice is left to the caller."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if (device or get_device()).type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)


def torch_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator seeded on `device`, so sampling does not depend on global state."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def describe(device: torch.device) -> str:
    """A human-readable name for the device, for reports and benchmark tables."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"

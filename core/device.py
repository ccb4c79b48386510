"""Where compute runs: CUDA when present, else CPU, from the same code path."""
from __future__ import annotations

import os
import random
from contextlib import contextmanager

import numpy as np
import torch


def get_device(prefer: str | None = None) -> torch.device:
    """The device to compute on: `prefer` if given ('cpu', 'cuda'), else CUDA when available, else CPU.

    Called only at the entry points (the app's settings, each CLI command's --device, the bench's flag); everything
    below takes the device as a parameter. PRIVACY_AUDIT_DEVICE overrides the automatic choice.
    """
    choice = prefer or os.environ.get("PRIVACY_AUDIT_DEVICE")
    if choice:
        if choice.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"device {choice!r} was requested but no CUDA GPU is available")
        return canonical(choice)
    return canonical("cuda" if torch.cuda.is_available() else "cpu")


def canonical(device: torch.device | str) -> torch.device:
    """`device` with its index made explicit: 'cuda' becomes 'cuda:0' (the current GPU), so comparing it with a
    tensor's or model's device (always indexed) says whether they really differ."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so code that still draws from the global generators repeats."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@contextmanager
def deterministic_algorithms(device: torch.device):
    """Within the block, torch uses its deterministic algorithms on the CPU, and the previous setting is restored
    after (no process-wide switch left behind). The backward of `table[users]` otherwise sums the gradients of
    repeated users in thread order, and adversarial training (Adv-InT) amplifies that rounding into different
    attacker AUCs. On CUDA the setting is left as it is: deterministic CUDA kernels need an environment variable
    set before start-up, so GPU runs agree within a tolerance instead."""
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    if torch.device(device).type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)


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

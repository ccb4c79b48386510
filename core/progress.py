"""The progress callback every long task takes: progress(fraction in [0, 1], message)."""
from __future__ import annotations

from typing import Callable

Progress = Callable[[float, str], None]


def report(progress: Progress | None, fraction: float, message: str) -> None:
    """Call `progress` if there is one, with the fraction clipped to [0, 1]."""
    if progress is not None:
        progress(min(1.0, max(0.0, fraction)), message)


def scaled(progress: Progress | None, start: float, end: float, prefix: str = "") -> Progress | None:
    """A callback mapping a sub-task's [0, 1] onto [start, end] of `progress`."""
    if progress is None:
        return None
    return lambda fraction, message: progress(start + (end - start) * fraction, prefix + message)

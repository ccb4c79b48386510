"""Hyper-parameter metadata: each method's constructor fields carry a default, a help line and a range, which the
pages turn into widgets and the CLI into flags."""
from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass(frozen=True)
class HyperParameter:
    name: str
    kind: type
    default: object
    help: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()


def hp(default, help: str, low=None, high=None, log=False, choices=()):
    """A hyper-parameter field: its default and what the UI needs to build a widget for it."""
    return field(default=default, metadata={"help": help, "low": low, "high": high, "log": log, "choices": choices})



def hyperparameters_of(cls: type) -> list[HyperParameter]:
    """A dataclass's fields as HyperParameter records (default, help, range, choices)."""
    out = []
    for f in fields(cls):
        meta = f.metadata
        out.append(HyperParameter(f.name, type(f.default), f.default, meta.get("help", ""), meta.get("low"),
                                  meta.get("high"), meta.get("log", False), meta.get("choices", ())))
    return out

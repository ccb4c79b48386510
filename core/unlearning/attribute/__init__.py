"""Attribute unlearning (SPEC section 5): edit the user table θ* so attributes can no longer be inferred.

Every method is a dataclass whose fields are its hyper-parameters (with metadata the UI turns into widgets) and
one verb, `fit_transform(table, labels, model=None, split=None, progress=None, device=...) -> UnlearningResult`.
One registry, `UNLEARNERS`: a new method is one class and one line here.
"""
from __future__ import annotations

from ...params import HyperParameter, hyperparameters_of
from .base import AttributeUnlearner, UnlearningResult
from .d2d import D2DR, JointD2DR, SequentialD2DR
from .in_training import AdvInT, InTRetrain
from .lego import CalibrationCache, LegoStyle
from .linear import LinearEraser
from .transport import RelabelTransport, transport_hint
from .u2u import U2UR, U2URClosedForm

__all__ = ["UNLEARNERS", "AttributeUnlearner", "CalibrationCache", "HyperParameter", "UnlearningResult",
           "hyperparameters", "make_unlearner", "transport_hint"]

UNLEARNERS: dict[str, type[AttributeUnlearner]] = {
    cls.name: cls for cls in (D2DR, U2UR, U2URClosedForm, LinearEraser, LegoStyle, JointD2DR, SequentialD2DR,
                              RelabelTransport, InTRetrain, AdvInT)
}


def make_unlearner(name: str, **params) -> AttributeUnlearner:
    """The registered method `name` built with `params` (its hyper-parameters; the rest at their defaults)."""
    if name not in UNLEARNERS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(UNLEARNERS)}")
    return UNLEARNERS[name](**params)


def hyperparameters(name: str) -> list[HyperParameter]:
    """The method's hyper-parameters with defaults, help and ranges, for building widgets."""
    return hyperparameters_of(UNLEARNERS[name])

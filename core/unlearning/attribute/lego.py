"""LEGO-style multi-attribute unlearning: cached per-attribute calibrations, combined per request, then aimed
at the target like D2D-R (the paper's code is not public; this is our build of the idea, labelled "LEGO-style")."""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar, Mapping

import numpy as np
import torch

from ...data import AttributeLabels
from ...models import Recommender
from ...params import hp
from ...progress import report, scaled
from .base import group_codes, labels_digest, table_digest, total_variance
from .d2d import D2DR, d2d_optimise, target_driven
from .mmd import represented_mmd, uses_derived
from .moments import moment_match
from .target import validation_ranking


class CalibrationCache:
    """Per-attribute calibrations Δ_a, keyed by (table, derived views, attribute labels, settings), least recently
    used dropped past `max_entries`. Owned by the caller (the app keeps one per process), thread-safe."""

    def __init__(self, max_entries: int = 64):
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> torch.Tensor | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: tuple, value: torch.Tensor) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


@dataclass(frozen=True)
class LegoStyle(D2DR):
    """LEGO-style multi-attribute unlearning.

    Step 1, calibration: for each attribute alone, an offset Δ_a = the closed-form matching of that attribute (the
    least mean squared move that gives its groups a random group's mean, or mean and covariance), optionally
    refined by `calibration_steps` MMD passes; each Δ_a cached in the caller's CalibrationCache. Step 2,
    combination: θ_S = θ* + Σ w_a Δ_a with weights w ≥ 0 fitted to the requested set's MMD + α‖θ_S − θ*‖². Then,
    as D2D-R, the target-driven search from that start, or from the original table if the start leaks more (least
    strength, MMD refinement, full-audit verification); when that joint search misses, the attributes are aimed at
    one at a time and verified together (`one_at_a_time`).
    A new request (an attribute added or dropped) reuses the cached calibrations."""

    name: ClassVar[str] = "lego"
    label: ClassVar[str] = "LEGO-style"
    description: ClassVar[str] = ("Per-attribute calibrations computed once and cached, combined with fitted weights "
                                  "for the requested set, then aimed at the target; adding or dropping an attribute "
                                  "reuses the cache.")
    calibration_steps: int = hp(0, "MMD passes refining each attribute's closed-form calibration (cached)", 0, 3000)
    combination_steps: int = hp(30, "steps fitting the combination weights", 0, 500)
    combination_users: int = hp(512, "users sampled per combination step (a few weights need few users)", 64, 20000)
    joint_rounds: int = hp(2, "closed-form rounds over all requested attributes after combining (the calibrations "
                           "interfere when attributes are correlated); 0 = pure combination", 0, 10)
    one_at_a_time: bool = hp(True, "target-driven, several attributes: when the joint search from the combination "
                             "misses, aim at the attributes one at a time (most leaking first), then verify them "
                             "together")

    def _keys(self, original: torch.Tensor, labels: Mapping[str, AttributeLabels],
              model: Recommender | None) -> dict[str, tuple]:
        """Each attribute's cache key: the table, the labels, every setting the calibration depends on, and (when
        calibrating on derived representations) those representations, which depend on the model's graph and
        item table."""
        context = [table_digest(original)]
        if model is not None:
            context += [table_digest(v) for v in model.derived_representations(original).values()]
        settings = (self.alpha, self.estimator, self.calibration_steps, self.lr, self.batch_users, self.seed,
                    self.representations, self.closed_form)
        return {name: (*context, name, labels_digest(attribute), *settings) for name, attribute in labels.items()}

    def calibrate(self, original: torch.Tensor, labels: Mapping[str, AttributeLabels],
                  model: Recommender | None = None, cache: CalibrationCache | None = None, progress=None
                  ) -> tuple[dict[str, torch.Tensor], int]:
        """Δ_a for each attribute, from `cache` when there; returns them and how many came from the cache."""
        model = model if uses_derived(model, self.representations, original) else None
        cache = cache if cache is not None else CalibrationCache()
        keys = self._keys(original, labels, model)
        offsets, reused = {}, 0
        for i, (name, attribute) in enumerate(labels.items()):
            cached = cache.get(keys[name])
            if cached is not None:
                offsets[name], reused = cached, reused + 1
                continue
            report(progress, 0.3 * i / len(labels), f"calibrating {name}")
            (groups,) = group_codes({name: attribute}, len(original), original.device)
            calibrated = moment_match(original, [(groups.codes, groups.n_classes)], self.seed,
                                      covariance=self.closed_form == "mean+covariance")
            if self.calibration_steps:
                calibrated, _ = d2d_optimise(original, calibrated, [groups], self, model, None,
                                             steps=self.calibration_steps)
            offsets[name] = (calibrated - original).detach()
            cache.put(keys[name], offsets[name])
        return offsets, reused

    def _run(self, original, labels, context):
        model, progress, device = context.model, context.progress, context.device
        start = time.perf_counter()
        offsets, cached_before = self.calibrate(original, labels, model, context.cache, progress)
        model_for_mmd = model if uses_derived(model, self.representations, original) else None
        calibration_seconds = time.perf_counter() - start
        groups = group_codes(labels, len(original), device)
        parts = [offsets[n] for n in labels]  # A offsets of N × d, kept apart: a stacked copy is A·N·d more memory
        # ‖Σ w_a Δ_a‖² per user, averaged over the users, is wᵀ G w with G the offsets' mean inner products: the
        # regulariser is exact without forming the combined table at every step
        flat = [p.reshape(-1) for p in parts]
        gram = torch.stack([torch.stack([a @ b for b in flat]) for a in flat]) / len(original)
        scale = total_variance(original)
        raw_weights = torch.zeros(len(labels), device=device, requires_grad=True)  # w = softplus(raw)·c, w0 = 1
        optimizer = torch.optim.Adam([raw_weights], lr=0.05)
        labelled = torch.stack([g.onehot.sum(1) > 0 for g in groups]).any(0).nonzero().squeeze(1)
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        history = []
        for step in range(self.combination_steps):
            weights = torch.nn.functional.softplus(raw_weights) / np.log(2.0)
            batch = labelled
            if len(batch) > self.combination_users:
                batch = batch[torch.randperm(len(batch), generator=generator)[: self.combination_users].to(batch.device)]
            onehots = [g.onehot[batch] for g in groups]
            if model_for_mmd is None:  # the batch's rows only: memory ~ batch, not N (a million users, 3 attributes)
                rows = original[batch] + sum(w * p[batch] for w, p in zip(weights, parts))
                loss = represented_mmd(rows, torch.arange(len(batch), device=device), onehots,
                                       self.estimator == "null-corrected")
            else:  # derived views (LightGCN's propagation) mix every user's row: the whole table
                table = original + sum(w * p for w, p in zip(weights, parts))
                loss = represented_mmd(table, batch, onehots, self.estimator == "null-corrected", model_for_mmd)
            loss = loss + self.alpha * (weights @ gram @ weights) / scale
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            history.append(float(loss.detach()))
        weights = (torch.nn.functional.softplus(raw_weights) / np.log(2.0)).detach()
        combined = original.clone()
        for w, p in zip(weights.tolist(), parts):
            combined.add_(p, alpha=w)
        if self.joint_rounds and len(labels) > 1:
            combined = moment_match(combined, [(g.codes, g.n_classes) for g in groups], self.seed + 1,
                                    rounds=self.joint_rounds, covariance=self.closed_form == "mean+covariance")
        weights_by_name = dict(zip(labels, [round(float(w), 3) for w in weights]))
        notes = f"combination weights {weights_by_name}; {cached_before} of {len(labels)} calibrations reused from the cache"
        details = {"weights": weights_by_name, "reused_calibrations": cached_before,
                   "new_calibrations": len(labels) - cached_before, "calibration_seconds": calibration_seconds,
                   "combination_seconds": time.perf_counter() - start - calibration_seconds}
        if self.target_gap > 0:
            table, more, extra = target_driven(self, original, groups, labels, model, scaled(progress, 0.4, 1.0),
                                               device, start=combined, start_label="LEGO combination",
                                               one_at_a_time=self.one_at_a_time,
                                               ranking=validation_ranking(model, context.split, device))
            details.update(extra["details"])
            return table, history + more, {"notes": f"{notes}. {extra['notes']}", "details": details}
        if self.steps:
            combined, more = d2d_optimise(original, combined, groups, self, model, scaled(progress, 0.4, 1.0))
            history.extend(more)
        return combined, history, {"notes": notes, "details": details}

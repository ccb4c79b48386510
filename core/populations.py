"""Synthetic user tables with a planted attribute: the proxies for data we do not have (other sizes, other
strengths), used by the benchmarks and the tests so that no default is tuned to one dataset.

A population is N users × d dimensions of standard normal noise with a binary attribute planted three ways at
once, each scaled by `strength`: a mean shift along one direction (what a linear attacker reads), a variance
change along another (what only a non-linear attacker reads), and attribute-dependent membership of a few
clusters (structure beyond the first two moments). `planted_attributes` plants three attributes at once (the shape
of gender, age and occupation), for multi-attribute requests. Deterministic for a seed; generated in chunks, so a
million users take a few seconds and 256 MB.
"""
from __future__ import annotations

import numpy as np

from .data import AttributeLabels

PLANTED_STRENGTHS = {"weak": 0.6, "strong": 1.5}  # before: best attacker AUC about 0.59 and 0.71 at 20,000 users


SIGNALS = ("mean", "variance", "clusters")


def planted_population(n_users: int, dim: int = 64, strength: float = 1.0, seed: int = 0,
                       share: float = 0.4, chunk: int = 200_000, signals: tuple[str, ...] = SIGNALS,
                       ) -> tuple[np.ndarray, AttributeLabels]:
    """(table float32 N × d, labels of the binary attribute 'planted') with the planted `signals` at `strength`."""
    rng = np.random.default_rng(seed)
    directions = np.linalg.qr(rng.normal(size=(dim, 3)))[0].T  # orthonormal: mean, variance, cluster axes
    centres = rng.normal(size=(6, dim)) * 0.6
    cluster_weights = np.stack([np.full(6, 1 / 6), rng.dirichlet(np.ones(6) * 2.0)])
    attribute = (rng.random(n_users) < share).astype(np.int64)
    table = np.empty((n_users, dim), dtype=np.float32)
    for start in range(0, n_users, chunk):
        a = attribute[start : start + chunk]
        part_rng = np.random.default_rng([seed, start])
        x = part_rng.standard_normal((len(a), dim))
        if "mean" in signals:
            x += np.outer(strength * 0.45 * (a - share), directions[0])
        if "variance" in signals:
            along = x @ directions[1]
            x += np.outer(along * (np.exp(strength * 0.35 * a) - 1), directions[1])
        mixing = cluster_weights[0][None, :].repeat(len(a), 0)
        if "clusters" in signals:
            mixing = min(strength, 1.0) * cluster_weights[a] + (1 - min(strength, 1.0)) * cluster_weights[0]
        cumulative = np.cumsum(mixing, axis=1)
        cluster = (part_rng.random((len(a), 1)) > cumulative).sum(1).clip(max=5)
        x += centres[cluster]
        table[start : start + chunk] = x
    labels = AttributeLabels("planted", attribute, ("no", "yes"), np.ones(n_users, dtype=bool), kind="binary")
    return table, labels


SEVERAL = ("binary", "ordinal", "categorical")  # the three planted attributes of `planted_attributes`


def planted_attributes(n_users: int, dim: int = 64, strength: float = 1.0, seed: int = 0, chunk: int = 200_000,
                       ) -> tuple[np.ndarray, dict[str, AttributeLabels]]:
    """(table float32 N × d, labels) with three attributes planted as class-mean shifts, the shape of gender, age and
    occupation: 'binary' (40% yes), 'ordinal' (4 classes, each a step further along one direction plus a class
    offset) and 'categorical' (6 classes, drawn depending on the ordinal one, as occupation depends on age), each
    class's mean a random vector of a few shared directions. The proxy for a multi-attribute request (LEGO-style,
    joint D2D-R) at sizes no real dataset here has. Deterministic for a seed; generated in chunks."""
    rng = np.random.default_rng([seed, 7])
    axes = np.linalg.qr(rng.normal(size=(dim, 8)))[0].T  # the attributes share 8 directions, as tastes overlap
    binary = (rng.random(n_users) < 0.4).astype(np.int64)
    ordinal = rng.choice(4, n_users, p=[0.3, 0.35, 0.22, 0.13])
    logits = rng.normal(0, 0.5, (4, 6))
    logits[0, 0] += 1.5
    logits[3, 5] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    categorical = (rng.random((n_users, 1)) > probs[ordinal].cumsum(1)).sum(1).clip(max=5)
    scale = strength * 0.45
    effects = {
        "binary": np.outer([-0.4, 0.6], axes[0]) * scale + rng.normal(0, 0.1 * scale, (2, 8)) @ axes,
        "ordinal": (np.outer(np.arange(4) - 1.2, axes[1]) * 0.35 + rng.normal(0, 0.25, (4, 8)) @ axes) * scale,
        "categorical": rng.normal(0, 0.35 * scale, (6, 8)) @ axes,
    }
    codes = {"binary": binary, "ordinal": ordinal, "categorical": categorical}
    table = np.empty((n_users, dim), dtype=np.float32)
    for start in range(0, n_users, chunk):
        stop = min(start + chunk, n_users)
        x = np.random.default_rng([seed, start]).standard_normal((stop - start, dim))
        for name, effect in effects.items():
            x += effect[codes[name][start:stop]]
        table[start:stop] = x
    classes = {"binary": ("no", "yes"), "ordinal": ("1", "2", "3", "4"),
               "categorical": tuple(f"c{i}" for i in range(6))}
    labels = {name: AttributeLabels(name, codes[name], classes[name], np.ones(n_users, dtype=bool), kind=name)
              for name in SEVERAL}
    return table, labels

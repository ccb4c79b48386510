"""Attribute-unlearning generalisation benchmark: does the target hold where nothing was tuned?

Rows: MovieLens-100K × {BPR-MF, NeuMF, LightGCN} × {gender, age, occupation, all three}; ML-100K subsampled to
300 users; the built-in demo (and its generator at other sizes: `--demo-users`); synthetic uploaded tables (no
model) of 10,000 / 100,000 / 1,000,000 users × 64 with a weak and a strong planted attribute (`core.populations`),
and with three planted attributes requested at once.
Each row: the product's defaults (D2D-R for one attribute, LEGO-style for several, target |AUC − 0.5| ≤ 0.05), the
worst |AUC − 0.5| before and after over every default attacker (MLP, XGBoost, logistic regression; 5-fold CV ×3,
the audit's protocol) and every served representation, the verdict, NDCG@20 kept, seconds and peak memory (RSS, and
CUDA's when on a GPU).

Writes the "attribute_unlearning" section of bench/RESULTS.md.
Usage: python bench/attribute_unlearning.py [--device cpu|cuda] [--only ml100k demo synthetic several subsample]
       [--sizes 10000 100000 1000000] [--signals mean variance clusters] [--strengths weak strong]
       [--demo-users 1000 6000] [--demo-models bpr neumf lightgcn] [--demo-strength 1.5]
       [--method NAME] [--seed N] [--max-seconds S] [--requests gender age occupation all] [--section NAME]
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import pandas as pd
import torch
from common import table, write_section

from core.audit import CrossValidation, run_audit
from core.data import (
    DEMO_EFFECTS, default_ml100k_dir, encode_attribute, load_movielens_100k, make_synthetic, split_per_user,
)
from core.device import describe, get_device
from core.metrics import evaluate_full
from core.models import served_representations
from core.populations import PLANTED_STRENGTHS, SIGNALS, planted_attributes, planted_population
from core.training import DEFAULT_LR, TrainConfig, train_model
from core.unlearning.attribute import UNLEARNERS, make_unlearner

ATTRIBUTES = ("gender", "age", "occupation")
REQUESTS = {"gender": ("gender",), "age": ("age",), "occupation": ("occupation",), "all": ATTRIBUTES}
AUDIT = CrossValidation()  # the audit's own protocol: 5-fold CV ×3, every labelled user (≤ 50,000 sampled)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def worst(table_, labels, model, device) -> tuple[float, str]:
    """The largest |AUC − 0.5| over default attackers, attributes and served representations, and where."""
    found, where = 0.0, ""
    reps = served_representations(model, table_.to(model.device) if model is not None else table_)
    for rep, values in reps.items():
        audit = run_audit(values, labels, protocol=AUDIT, n_permutations=0, device=device)
        for score in audit.scores:
            if abs(score.auc - 0.5) > found:
                found, where = abs(score.auc - 0.5), f"{score.attribute}/{score.attacker}/{rep} {score.auc:.3f}"
    return found, where


def run_row(name: str, table_: torch.Tensor, labels: dict, model, split, device, method: str | None = None,
            seed: int | None = None, max_seconds: float | None = None) -> dict:
    """One row: `method` (default: D2D-R for one attribute, LEGO-style for several) at its defaults, its own seed
    replaced by `seed` when given (other seeds are how a row's spread is measured, never how a default is picked),
    with a time cap when `max_seconds` is given (the row then says whether it ran out)."""
    method = method or ("d2d_r" if len(labels) == 1 else "lego")
    before, before_where = worst(table_, labels, model, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    params = ({} if seed is None else {"seed": seed}) | ({} if max_seconds is None else {"max_seconds": max_seconds})
    result = make_unlearner(method, **params).fit_transform(table_, labels, model, split, device=device)
    seconds = time.perf_counter() - start
    after, after_where = worst(result.table, labels, model, device)
    row = {"data": name + ("" if seed is None else f" (seed {seed})"), "method": result.label,
           "attributes": "+".join(labels), "before": before,
           "after": after, "worst after (attribute/attacker/representation AUC)": after_where,
           "verdict": "no leak" if after <= 0.05 else "leaks", "target reached": result.details.get("reached"),
           "time cap ran out": result.details.get("time_capped", False),
           "seconds": seconds, "peak RSS GB": peak_rss_gb()}
    if device.type == "cuda":
        row["peak GPU GB"] = torch.cuda.max_memory_allocated(device) / 1024**3
    if model is not None and split is not None:
        original = evaluate_full(model.scorer(), split, "test", ks=(20,), device=device)["NDCG@20"]
        edited = evaluate_full(model.scorer(result.table.to(device)), split, "test", ks=(20,), device=device)["NDCG@20"]
        row["NDCG kept"] = edited / original
    print(pd.DataFrame([row]).to_string(index=False), flush=True)
    return row


def movielens_rows(device, models=("bpr", "neumf", "lightgcn"), method=None, seed=None,
                   requests=tuple(REQUESTS)) -> list[dict]:
    folder = default_ml100k_dir()
    if folder is None:
        print("MovieLens-100K not found: its rows are skipped")
        return []
    dataset = load_movielens_100k(folder)
    split = split_per_user(dataset, seed=0)
    labels = {c: encode_attribute(dataset.attributes[c], c) for c in ATTRIBUTES}
    rows = []
    for kind in models:
        model = train_model(kind, split, TrainConfig(lr=DEFAULT_LR[kind]), device=device).model
        for request in requests:
            rows.append(run_row(f"ML-100K {kind}", model.user_table(), {a: labels[a] for a in REQUESTS[request]},
                                model, split, device, method, seed))
    return rows


def subsample_rows(device, method=None) -> list[dict]:
    """ML-100K BPR-MF's table, 300 users drawn at random (three seeds): the smallest population we claim."""
    folder = default_ml100k_dir()
    if folder is None:
        return []
    dataset = load_movielens_100k(folder)
    split = split_per_user(dataset, seed=0)
    table_ = train_model("bpr", split, device=device).model.user_table().cpu()
    rows = []
    for seed in (0, 1, 2):
        users = np.sort(np.random.default_rng(seed).choice(dataset.n_users, 300, replace=False))
        gender = encode_attribute(dataset.attributes["gender"].iloc[users].reset_index(drop=True), "gender")
        rows.append(run_row(f"ML-100K 300 users (seed {seed})", table_[users], {"gender": gender}, None, None, device,
                            method))
    return rows


def demo_items(n_users: int) -> int:
    """Items for a demo of `n_users`: the built-in 1,500 at 1,000 users, growing as √users (6,000 users get 3,674,
    close to MovieLens-1M's 6,040 × 3,706, the size of the real dataset acceptance also runs on)."""
    return max(1500, round(1500 * (n_users / 1000) ** 0.5))


def demo_rows(device, method=None, users=(1000,), models=("bpr",), strength: float = 1.0, seed=None) -> list[dict]:
    """The built-in demo (1,000 users) and, for the sizes in `users`, the same generator at other sizes, its
    attribute effects times `strength`; every model as the app's Model page trains it (the training defaults:
    early stopping on validation NDCG@20). Until 2026-12-07 BPR-MF here trained for 15 epochs only."""
    rows = []
    for n in users:
        effects = tuple(strength * e for e in DEMO_EFFECTS)
        dataset = make_synthetic(n_users=n, n_items=demo_items(n), effects=effects)
        split = split_per_user(dataset, seed=0)
        labels = {c: encode_attribute(dataset.attributes[c], c) for c in ATTRIBUTES}
        for kind in models:
            config = TrainConfig(lr=DEFAULT_LR[kind])
            model = train_model(kind, split, config, device=device).model
            name = ("demo" if n == 1000 else f"demo {n:,} users") + (f" ×{strength:g}" if strength != 1 else "")
            name += f" {kind}"
            rows += [run_row(name, model.user_table(), {"gender": labels["gender"]}, model, split, device, method,
                             seed),
                     run_row(name, model.user_table(), labels, model, split, device, method, seed)]
    return rows


def synthetic_rows(device, sizes, signals=SIGNALS, strengths=tuple(PLANTED_STRENGTHS), method=None,
                   max_seconds: float | None = None) -> list[dict]:
    rows = []
    kinds = "+".join(signals)
    for n in sizes:
        for strength_name in strengths:
            strength = PLANTED_STRENGTHS.get(strength_name) or float(strength_name)
            table_, labels = planted_population(n, 64, strength, seed=n % 97, signals=signals)
            rows.append(run_row(f"synthetic {n:,} × 64, {strength_name} {kinds}" if strength_name in PLANTED_STRENGTHS
                               else f"synthetic {n:,} × 64, strength {strength} {kinds}", torch.as_tensor(table_),
                                {"planted": labels}, None, None, device, method, max_seconds=max_seconds))
            del table_
    return rows


def several_rows(device, sizes, strengths=tuple(PLANTED_STRENGTHS), method=None,
                 max_seconds: float | None = None) -> list[dict]:
    """Uploaded tables with three planted attributes (binary, ordinal, categorical: `planted_attributes`), all three
    requested at once: LEGO-style by default, at sizes no real dataset here has."""
    rows = []
    for n in sizes:
        for strength_name in strengths:
            strength = PLANTED_STRENGTHS.get(strength_name) or float(strength_name)
            table_, labels = planted_attributes(n, 64, strength, seed=n % 97)
            name = f"synthetic {n:,} × 64, three attributes, " + (
                strength_name if strength_name in PLANTED_STRENGTHS else f"strength {strength}")
            rows.append(run_row(name, torch.as_tensor(table_), labels, None, None, device, method,
                                max_seconds=max_seconds))
            del table_
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None)
    parser.add_argument("--only", nargs="*", default=["synthetic", "several", "subsample", "demo", "ml100k"],
                        help="row groups: synthetic (one planted attribute), several (three planted attributes at "
                        "once), subsample, demo, ml100k")
    parser.add_argument("--sizes", nargs="*", type=int, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--models", nargs="*", default=["bpr", "neumf", "lightgcn"])
    parser.add_argument("--demo-users", nargs="*", type=int, default=[1000],
                        help="users of the demo rows (1000 = the built-in demo; 6000 is MovieLens-1M's size)")
    parser.add_argument("--demo-models", nargs="*", default=["bpr"], help="models trained on the demo rows")
    parser.add_argument("--demo-strength", type=float, default=1.0,
                        help="the demo's attribute effects times this (1 = the built-in demo's)")
    parser.add_argument("--signals", nargs="*", default=list(SIGNALS), help="planted signals of the synthetic rows")
    parser.add_argument("--strengths", nargs="*", default=list(PLANTED_STRENGTHS),
                        help="planted strengths of the synthetic rows: weak, strong or a number")
    parser.add_argument("--method", default=None, choices=list(UNLEARNERS),
                        help="run this registered method on every row instead of the defaults")
    parser.add_argument("--seed", type=int, default=None, help="the method's seed (default: its own default)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="a time cap per attribute for the synthetic rows (default: none, as in the product; "
                        "100,000 users with a cluster signal can take hours on a CPU)")
    parser.add_argument("--requests", nargs="*", default=list(REQUESTS), choices=list(REQUESTS),
                        help="the ML-100K rows' attribute requests ('all' = the three at once)")
    parser.add_argument("--section", default="attribute_unlearning",
                        help="the RESULTS.md section to write (to run parts in parallel without overwriting)")
    args = parser.parse_args()
    device = get_device(args.device)
    title = (f"Attribute unlearning with {UNLEARNERS[args.method].label}" if args.method else
             "Attribute unlearning: the target where nothing was tuned") + (
        f" ({', '.join(args.only)})" if args.section != "attribute_unlearning" else "")
    rows: list[dict] = []

    def record(new_rows: list[dict], done: bool = False) -> None:
        """Rewrite the section after every row, so a long run that is stopped keeps what it measured."""
        rows.extend(new_rows)
        frame = pd.DataFrame(rows)
        status = "" if done else f"(run in progress: {len(rows)} rows so far)\n\n"
        what = (f"{UNLEARNERS[args.method].label} at its defaults (target |AUC − 0.5| ≤ 0.05)"
                if args.method else "the product's defaults (D2D-R for one attribute, LEGO-style for several; "
                "target |AUC − 0.5| ≤ 0.05, closed-form start, MMD refinement up to 100 passes, 400 while the "
                "probe keeps falling, up to 3 tries; no time cap" + (f" (synthetic rows: {args.max_seconds:g} s)"
                                                                    if args.max_seconds else "") + ")")
        body = (f"Device: {describe(device)}. Every row runs {what}. 'before'/'after': the largest |AUC − 0.5| "
                "over MLP, XGBoost and logistic regression, every attribute of the request and every served "
                "representation (LightGCN: layer 0 and propagated; NeuMF: both tables), 5-fold CV ×3 on every "
                "labelled user (a stratified 50,000 past that), measured independently of the method's own probe. "
                "'verdict' is that number against 0.05. Synthetic rows are uploaded tables with no model (no NDCG). "
                "'peak RSS GB' is the process's high-water mark so far (rows run in order, so it only grows).\n\n"
                + status + table(frame, ".3f"))
        write_section(args.section, title, body)

    if "synthetic" in args.only:
        for n in args.sizes:
            record(synthetic_rows(device, [n], tuple(args.signals), tuple(args.strengths), args.method,
                                  args.max_seconds))
    if "several" in args.only:
        for n in args.sizes:
            record(several_rows(device, [n], tuple(args.strengths), args.method, args.max_seconds))
    if "subsample" in args.only:
        record(subsample_rows(device, args.method))
    if "demo" in args.only:
        for n in args.demo_users:
            record(demo_rows(device, args.method, (n,), tuple(args.demo_models), args.demo_strength, args.seed))
    if "ml100k" in args.only:
        for kind in args.models:
            record(movielens_rows(device, (kind,), args.method, args.seed, tuple(args.requests)))
    record([], done=True)
    print(table(pd.DataFrame(rows), ".3f"))


if __name__ == "__main__":
    main()

"""Command line: `python -m core train ...` (and the other subcommands registered in COMMANDS)."""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from tqdm import tqdm

from .data import DataError


def _progress_bar(total: int = 1000) -> tuple[tqdm, Callable[[float, str], None]]:
    """A tqdm bar driven by the core's progress(fraction, message) callbacks."""
    bar = tqdm(total=total, bar_format="{l_bar}{bar}| {elapsed} {postfix}", file=sys.stderr)

    def update(fraction: float, message: str) -> None:
        bar.n = int(min(1.0, max(0.0, fraction)) * total)
        bar.set_postfix_str(message, refresh=False)
        bar.refresh()

    return bar, update


def add_train(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train a recommender and save it")
    parser.add_argument("--data", default="synthetic",
                        help="synthetic | ml-100k[:FOLDER] | ml-1m:FOLDER | csv:FILE[,ATTRIBUTES_FILE]")
    parser.add_argument("--model", default="bpr", choices=["bpr", "neumf", "lightgcn"])
    parser.add_argument("--out", required=True, help="folder to write weights.safetensors and model.json")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=200, help="maximum epochs (early stopping on validation)")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--rating-threshold", type=float, default=None, help="keep ratings ≥ this as positives")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    from .checkpoint import save_model
    from .data import load_dataset, split_per_user
    from .device import get_device
    from .training import DEFAULT_LR, TrainConfig, train_model

    dataset = load_dataset(args.data, rating_threshold=args.rating_threshold)
    print(f"{dataset.name}: {dataset.n_users} users, {dataset.n_items} items, {dataset.n_interactions} interactions")
    split = split_per_user(dataset, seed=args.seed)
    config = TrainConfig(
        dim=args.dim, lr=args.lr or DEFAULT_LR[args.model], max_epochs=args.epochs, patience=args.patience,
        seed=args.seed,
    )
    bar, progress = _progress_bar()
    with bar:
        result = train_model(args.model, split, config, progress=progress, device=get_device(args.device))
    save_model(args.out, result, dataset)
    print(f"{result.model.label}: best epoch {result.best_epoch} of {result.epochs_run}, "
          f"{result.seconds:.1f} s on {result.device}")
    for part in (result.valid, result.test):
        print(f"  {part.part:5s} (full ranking, {part.n_users} users): "
              + ", ".join(f"{name} {value:.4f}" for name, value in part.metrics.items()))
    print(f"saved to {args.out}")
    return 0


def add_audit(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "audit", help="attribute-inference audit of user embeddings; a release gate",
        description="Attack the embeddings for each attribute and exit 1 when any attribute leaks past the "
                    "threshold: an attribute fails the gate when its strongest attacker's AUC is farther from 0.5 "
                    "than MAX_AUC is (|AUC - 0.5| > MAX_AUC - 0.5, two-sided: AUC 0.35 fails a 0.6 gate too) AND "
                    "the permutation test finds the leakage significant (p < 0.05). Exit 2 on bad input.")
    parser.add_argument("--embeddings", required=True, help=".npy, .csv, .parquet or .safetensors (users × dims)")
    parser.add_argument("--attributes", required=True, help="CSV or Parquet with a user-id column")
    parser.add_argument("--attribute", action="append", help="attribute column(s) to audit (default: all)")
    parser.add_argument("--attacker", action="append",
                        help="mlp, xgboost, logreg, mlp_sklearn (the reference MLP), majority (default: mlp, xgboost)")
    parser.add_argument("--protocol", choices=["cv", "shadow"], default="cv")
    parser.add_argument("--bins", type=int, default=4, help="quantile bins for numeric attributes")
    parser.add_argument("--permutations", type=int, default=200)
    parser.add_argument("--max-auc", type=float, default=0.6)
    parser.add_argument("--report", help="write the full result as JSON here")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(handler=run_audit_command)


def run_audit_command(args: argparse.Namespace) -> int:
    from .attacks import PROTOCOLS, run_audit
    from .data import encode_attribute
    from .uploads import prepare_upload

    upload = prepare_upload(args.embeddings, args.attributes)
    for warning in upload.warnings:
        print(f"note: {warning}", file=sys.stderr)
    columns = args.attribute or list(upload.attributes.columns)
    unknown = [c for c in columns if c not in upload.attributes.columns]
    if unknown:
        raise DataError(f"attribute(s) {unknown} not in the attributes file; it has {list(upload.attributes.columns)}")
    labels = {c: encode_attribute(upload.attributes[c], c, n_bins=args.bins) for c in columns}
    bar, progress = _progress_bar()
    with bar:
        result = run_audit(upload.table, labels, attackers=args.attacker or ("mlp", "xgboost"),
                           protocol=PROTOCOLS[args.protocol], n_permutations=args.permutations, seed=args.seed,
                           progress=progress, representation_name=args.embeddings)
    print(result.to_markdown())
    if args.report:
        with open(args.report, "w") as handle:
            handle.write(result.to_json())
        print(f"report written to {args.report}")
    failing = [v for v in result.verdicts if v.leaks and v.leakage > args.max_auc - 0.5]
    for verdict in failing:
        print(f"GATE FAILED: {verdict.attribute} leaks (AUC {verdict.auc:.3f}, |AUC - 0.5| = {verdict.leakage:.3f} "
              f"> {args.max_auc - 0.5:.3f}, p = {verdict.p_value:.3g})")
    if not failing:
        print(f"gate passed: no attribute leaks past AUC {args.max_auc} (two-sided)")
    return 1 if failing else 0


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [add_train, add_audit]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core", description="Privacy audit for recommender systems")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(subparsers)
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

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


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [add_train]


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

"""`python -m core forget`: make a saved model forget interactions, users or items with one or several methods,
compare them with Retrain, save every updated model and write the comparison as JSON. The run is recorded in the run
history (kind "deletion": the request in counts, never the forgotten ids; the table and each method's verdict).

Exit codes: 0 when every chosen method's completeness matches Retrain's within the tolerance, 1 when one
under- or over-forgets, 2 when the input is refused (unknown ids, an empty request, an unknown method).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def add_forget(subparsers: argparse._SubParsersAction) -> None:
    from ...cli import _add_runs
    from . import DELETERS

    parser = subparsers.add_parser(
        "forget", help="data deletion: forget interactions, users or items and compare methods with Retrain",
        description="Forget a request with each method (Retrain always runs: it is the reference), save every updated "
                    "model like a trained one under --out/METHOD, and report accuracy, completeness (beside "
                    "Retrain's), wall time and speed-up per method. Exit 0 when every chosen method matches "
                    "Retrain's completeness within the tolerance, 1 when one does not, 2 on refused input.")
    parser.add_argument("--model", required=True, help="a saved model folder (weights.safetensors + model.json)")
    parser.add_argument("--data", default=None, help="the model's data (default: what model.json names)")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--request", help="CSV with user and item columns (pairs), or only a user or an item column "
                                        "(whole users or items), in the dataset's own ids")
    what.add_argument("--random-interactions", type=float, metavar="SHARE",
                      help="forget a random share of the training interactions (0.01 = 1%%)")
    what.add_argument("--random-users", type=float, metavar="SHARE", help="forget a random share of the users")
    parser.add_argument("--method", action="append", required=True,
                        help=f"one of {', '.join(DELETERS)}; repeat for several")
    parser.add_argument("--param", action="append", metavar="METHOD.NAME=VALUE", help="a method hyper-parameter")
    parser.add_argument("--out", required=True, help="folder; each updated model goes to OUT/METHOD")
    parser.add_argument("--report", required=True, help="write the comparison here (a JSON list, one object per row)")
    parser.add_argument("--auc-tolerance", type=float, default=0.05,
                        help="forgotten-vs-retained AUC below Retrain's still judged a match (default 0.05)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--seed", type=int, default=0, help="seed of random requests and of the probes")
    _add_runs(parser, argparse.SUPPRESS)
    parser.set_defaults(handler=run_forget)


def _methods(names: list[str], specs: list[str] | None):
    from ...data import DataError
    from . import DELETERS, hyperparameters, make_deleter

    unknown = [n for n in names if n not in DELETERS]
    if unknown:
        raise DataError(f"unknown deletion method(s) {', '.join(unknown)}; choose among {', '.join(DELETERS)}")
    params: dict[str, dict] = {n: {} for n in names}
    for spec in specs or []:
        target, sep, value = spec.partition("=")
        method, _, key = target.partition(".")
        known = {h.name: h for h in hyperparameters(method)} if method in DELETERS else {}
        if not sep or method not in params or key not in known:
            raise DataError(f"--param {spec!r}: expected METHOD.NAME=VALUE with METHOD one of the chosen methods "
                            f"({', '.join(names)}) and NAME one of its hyper-parameters")
        kind = known[key].kind
        params[method][key] = (value.lower() in ("1", "true", "yes")) if kind is bool else kind(value)
    return [make_deleter(n, **params[n]) for n in dict.fromkeys(names)]


def run_forget(args: argparse.Namespace) -> int:
    from ...checkpoint import load_model, read_metadata
    from ...cli import _progress_bar, _spec_for, _store
    from ...data import DataError, load_dataset, split_per_user
    from ...device import get_device
    from ...recording import deletion_fields, deletion_start, recorded
    from ...training import TrainConfig
    from . import derive_shards, load_shards, random_interactions, random_users, read_request, save_shards
    from .evaluation import PASSING, Tolerance, run_deletion
    from .saved import save_deleted_model

    device = get_device(args.device)
    meta = read_metadata(args.model)
    spec = args.data or meta["dataset"].get("spec") or _spec_for(meta["dataset"].get("name", ""))
    dataset = load_dataset(spec, rating_threshold=meta["dataset"].get("rating_threshold"))
    split = split_per_user(dataset, seed=meta.get("split_seed", 0))
    model, meta = load_model(args.model, dataset, train_pairs=split.train, device=device)
    if args.request:
        path = Path(args.request)
        if not path.is_file():
            raise DataError(f"{path}: request file not found")
        request = read_request(path.read_bytes(), split, path.name, seed=args.seed)
    elif args.random_interactions is not None:
        request = random_interactions(split, args.random_interactions, seed=args.seed)
    else:
        request = random_users(split, args.random_users, seed=args.seed)
    methods = _methods(args.method, args.param)
    refused = [m.label for m in methods if not m.applies(model)]
    if refused:
        raise DataError(f"{', '.join(refused)} does not apply to {model.label}")
    print(request.summary(), file=sys.stderr)
    train_config = TrainConfig(**meta["train_config"]) if isinstance(meta.get("train_config"), dict) else None
    shards = load_shards(args.model, split.n_users)
    if shards is None and any(m.name == "sisa" for m in methods):
        sisa = next(m for m in methods if m.name == "sisa")
        shards = derive_shards(split.n_users, sisa.n_shards, model.seed)
        written = save_shards(args.model, shards)  # kept with the model: later requests shard the same way
        print(f"note: the model had no shard assignment; a seeded one ({sisa.n_shards} shards) was derived and "
              f"kept as {written}, so this run trains the original shard models too", file=sys.stderr)
    tolerance = Tolerance(auc=args.auc_tolerance)
    earlier = meta.get("deletion")  # a model that already forgot something says so
    name = model.label + (f" after {earlier.get('label')} forgot {earlier.get('request')}" if earlier else "")
    start = deletion_start(request, methods, tolerance, name, device, dataset, "cli", seed=args.seed,
                           model_folder=str(args.model))
    bar, progress = _progress_bar()
    with recorded(_store(args), start.pop("kind"), start.pop("label"), **start) as run:
        began = time.perf_counter()
        with bar:
            report = run_deletion(model, request, methods, progress=progress, device=device,
                                  train_config=train_config, shards=shards, tolerance=tolerance, seed=args.seed)
        if run is not None:
            run.finish(**deletion_fields(report, time.perf_counter() - began))
    frame = report.to_frame()
    print(frame.drop(columns=["why", "device", "notes"]).to_markdown(index=False, floatfmt=".4f"))
    print(f"tolerance: {report.tolerance.describe()}")
    for row in report.rows[1:]:
        folder = save_deleted_model(Path(args.out) / row.method, row.result, meta, request, row.accuracy)
        print(f"{row.label}: {row.verdict} ({row.why}); saved to {folder}")
    Path(args.report).write_text(json.dumps(report.to_records(), indent=1, default=str))
    print(f"report written to {args.report}")
    chosen = {m.name for m in methods}
    failing = [r for r in report.rows if r.method in chosen and r.verdict not in PASSING]
    for row in failing:
        print(f"VERDICT FAILED: {row.label} {row.verdict}: {row.why}")
    return 1 if failing else 0

"""Command line: `python -m core train ...` (and the other subcommands registered in COMMANDS)."""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

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
    parser.add_argument("--kcore", type=int, default=None, metavar="K",
                        help="keep users and items with at least K interactions (default 5; 1 = no filter)")
    _add_common(parser)
    parser.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    from .checkpoint import save_model
    from .data import MIN_INTERACTIONS, load_dataset, split_per_user
    from .device import get_device
    from .training import DEFAULT_LR, TrainConfig, train_model

    k = MIN_INTERACTIONS if args.kcore is None else args.kcore
    if k < 1:
        raise DataError(f"--kcore {k}: K must be 1 (no filter) or more")
    dataset = load_dataset(args.data, rating_threshold=args.rating_threshold, k=k)
    print(f"{dataset.name}: {dataset.n_users} users, {dataset.n_items} items, {dataset.n_interactions} interactions")
    for note in dataset.notes:
        print(f"  {note}")
    split = split_per_user(dataset, seed=args.seed)
    print(f"  split: {split.describe()}")
    config = TrainConfig(
        dim=args.dim, lr=args.lr or DEFAULT_LR[args.model], max_epochs=args.epochs, patience=args.patience,
        seed=args.seed,
    )
    from .models import MODEL_INFO
    from .recording import dataset_fields, recorded, save_trained, training_fields, training_params

    device = get_device(args.device)
    bar, progress = _progress_bar()
    with recorded(_store(args), "training", f"{MODEL_INFO[args.model].label} on {dataset.name}", source="cli",
                  model=MODEL_INFO[args.model].label, params=training_params(args.model, config, args.data),
                  device=str(device), **dataset_fields(dataset)) as run:
        with bar:
            result = train_model(args.model, split, config, progress=progress, device=device)
        if run is not None:
            save_trained(run.store, run.run_id, result, dataset, spec=args.data,
                         rating_threshold=args.rating_threshold, split_seed=args.seed)
            run.finish(**training_fields(result))
    save_model(args.out, result, dataset, spec=args.data, rating_threshold=args.rating_threshold, split_seed=args.seed,
               kcore=k, split_mode=split.mode)
    print(f"{result.model.label}: best epoch {result.best_epoch} of {result.epochs_run}, "
          f"{result.seconds:.1f} s on {result.device}")
    for part in (result.valid, result.test):
        print(f"  {part.part:5s} (full ranking, {part.n_users} users): "
              + ", ".join(f"{name} {value:.4f}" for name, value in part.metrics.items()))
    print(f"saved to {args.out}")
    return 0


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--seed", type=int, default=0)
    _add_runs(parser, argparse.SUPPRESS)


def _add_runs(parser: argparse.ArgumentParser, default=None) -> None:
    parser.add_argument("--runs", default=default, metavar="PATH",
                        help="the run history (SQLite) every run is recorded in (default: $PRIVACY_AUDIT_RUNS, "
                             "else data/runs/runs.sqlite)")


def _store(args: argparse.Namespace):
    """The run store this command records into (--runs, else $PRIVACY_AUDIT_RUNS, else data/runs/)."""
    from .runstore import open_store

    return open_store(getattr(args, "runs", None))


def _add_subject(parser: argparse.ArgumentParser) -> None:
    """What to audit or edit: a saved model (every representation it serves with), or uploaded embeddings."""
    parser.add_argument("--model", help="a saved model folder (weights.safetensors + model.json)")
    parser.add_argument("--data", default=None,
                        help="the model's data (default: what model.json names: synthetic, or ml-100k from "
                             "../shared/data); needed for its attributes and, for LightGCN, its graph")
    parser.add_argument("--embeddings", help=".npy, .npz, .csv, .parquet or .safetensors (users × dims), with "
                                             "--attributes; rows are matched to attributes by user id")
    parser.add_argument("--attributes", help="CSV or Parquet: a user-id column and attribute columns")
    parser.add_argument("--match-by-position", action="store_true",
                        help="the embeddings file has no user ids: give row i the attributes on row i of --attributes "
                             "(needs the same users in the same order); without this such files are refused")
    parser.add_argument("--attribute", action="append", help="attribute column(s) (default: all)")
    parser.add_argument("--attribute-type", action="append", metavar="NAME=TYPE",
                        help="override an attribute's inferred type: binary, categorical, ordinal or numeric")
    parser.add_argument("--bins", type=int, default=4, help="quantile bins for numeric attributes")


@dataclass
class Subject:
    """What a command works on: a user table, its labels, and the model and split when there is one."""

    table: torch.Tensor
    labels: dict
    model: object | None = None
    split: object | None = None
    dataset: object | None = None
    meta: dict | None = None
    user_ids: np.ndarray | None = None
    source: str = ""


def _load_subject(args: argparse.Namespace, device: torch.device) -> Subject:
    from .attributes import parse_type_overrides
    from .data import encode_attribute

    types = parse_type_overrides(args.attribute_type)
    if bool(args.model) == bool(args.embeddings):
        raise DataError("give either --model DIR or --embeddings FILE --attributes FILE")
    if args.model:
        from .checkpoint import load_model, read_metadata
        from .data import MIN_INTERACTIONS, load_dataset, split_per_user

        meta = read_metadata(args.model)
        spec = args.data or meta["dataset"].get("spec") or _spec_for(meta["dataset"].get("name", ""))
        dataset = load_dataset(spec, rating_threshold=meta["dataset"].get("rating_threshold"),
                               k=meta["dataset"].get("kcore") or MIN_INTERACTIONS)
        split = split_per_user(dataset, seed=meta.get("split_seed", 0), mode=meta.get("split_mode", "auto"))
        model, meta = load_model(args.model, dataset, train_pairs=split.train, device=device)
        attributes = dataset.attributes
        if attributes is None or attributes.shape[1] == 0:
            raise DataError(f"{spec}: this dataset has no attributes table to audit against")
        frame = attributes.reset_index(drop=True)
        table, subject = model.user_table(), dict(model=model, split=split, dataset=dataset, meta=meta)
        source = args.model
    else:
        from .uploads import prepare_upload

        if not args.attributes:
            raise DataError("--embeddings needs --attributes (a CSV or Parquet with a user-id column)")
        upload = prepare_upload(args.embeddings, args.attributes, match_by_position=args.match_by_position)
        print(f"{args.embeddings}: {upload.table.shape[0]} rows × {upload.table.shape[1]} dimensions ({upload.dtype}), "
              f"{upload.n_matched} users matched by {upload.matched_by}", file=sys.stderr)
        for note in upload.notes:
            print(f"note: {note}", file=sys.stderr)
        for warning in upload.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        frame, table = upload.attributes, torch.as_tensor(upload.table)
        subject, source = dict(user_ids=upload.export_ids), args.embeddings
    columns = args.attribute or list(frame.columns)
    unknown = [c for c in columns if c not in frame.columns]
    if unknown:
        raise DataError(f"attribute(s) {unknown} not in the attributes table; it has {list(frame.columns)}")
    unknown_types = [c for c in types if c not in columns]
    if unknown_types:
        raise DataError(f"--attribute-type names {unknown_types}, which are not among the attributes {columns}")
    labels = {c: encode_attribute(frame[c], c, n_bins=args.bins, kind=types.get(c)) for c in columns}
    for name, label in labels.items():
        print(f"{name}: {label.kind}, {label.n_classes} classes" + "".join(f"; {n}" for n in label.notes),
              file=sys.stderr)
    return Subject(table.to(device), labels, source=source, **subject)


def _model_label(subject: Subject) -> str:
    """The model a run worked on, as a report names it."""
    if subject.model is None:
        return f"uploaded embeddings ({subject.source})"
    edited = (subject.meta or {}).get("edited")
    return subject.model.label + (f" edited by {edited['label']}" if edited else "")


def _subject_data(subject: Subject) -> dict:
    """The data a run worked on: the model's dataset, or the uploaded table's content hash."""
    import hashlib

    from .recording import dataset_fields

    if subject.dataset is not None:
        return dataset_fields(subject.dataset)
    table = np.ascontiguousarray(subject.table.detach().cpu().numpy())
    return {"dataset": f"upload {subject.source}", "fingerprint": hashlib.sha256(table.tobytes()).hexdigest()[:16]}


def _spec_for(name: str) -> str:
    """A data spec for a dataset name saved before model.json recorded its spec."""
    if name.startswith("synthetic"):
        return "synthetic"
    if "100k" in name.lower():
        return "ml-100k"
    raise DataError(f"model.json does not say where its data ({name!r}) is; pass --data")


def add_audit(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "audit", help="attribute-inference audit of a model or of uploaded embeddings; a release gate",
        description="Attack every representation the model serves with (or the uploaded table) for each attribute. "
                    "An attribute fails the gate when its strongest attacker's two-sided gap |AUC - 0.5| is above "
                    "MAX_GAP and significant (corrected permutation test), or above MAX_GAP with too few users to "
                    "tell (inconclusive). Exit 0 when every attribute passes, 1 when one leaks, 2 on bad input.")
    _add_subject(parser)
    parser.add_argument("--attacker", action="append",
                        help="attackers (default: the 'default' set); see --attackers for the named sets")
    parser.add_argument("--attackers", choices=["default", "thorough"], default="default",
                        help="default: MLP, XGBoost, logistic regression; thorough adds a 256x256 MLP, an RBF-kernel "
                             "attacker and tuned boosted trees (for release audits)")
    parser.add_argument("--protocol", choices=["cv", "shadow"], default="cv")
    parser.add_argument("--permutations", type=int, default=200)
    parser.add_argument("--max-gap", type=float, default=0.05, help="tolerance for |AUC - 0.5| (default 0.05)")
    parser.add_argument("--max-auc", type=float, default=None, help="older form of the gate: MAX_GAP = MAX_AUC - 0.5")
    parser.add_argument("--max-users", type=int, default=50_000, help="attack a stratified sample past this size")
    parser.add_argument("--report", help="write the full result as JSON here")
    _add_common(parser)
    parser.set_defaults(handler=run_audit_command)


def run_audit_command(args: argparse.Namespace) -> int:
    from .audit import ATTACKER_SETS, PROTOCOLS, audit_model, run_audit, worst_verdicts
    from .device import get_device

    device = get_device(args.device)
    subject = _load_subject(args, device)
    tolerance = args.max_gap if args.max_auc is None else args.max_auc - 0.5
    attackers = args.attacker or ATTACKER_SETS[args.attackers]
    options = dict(attackers=attackers, protocol=PROTOCOLS[args.protocol], n_permutations=args.permutations,
                   seed=args.seed, tolerance=tolerance, max_users=args.max_users, device=device)
    from .recording import audit_fields, audit_params, recorded

    bar, progress = _progress_bar()
    with recorded(_store(args), "audit", f"audit of {subject.source}", source="cli", model=_model_label(subject),
                  attributes=list(subject.labels), device=str(device), **_subject_data(subject),
                  params=audit_params(attackers, options["protocol"], tolerance, permutations=args.permutations,
                                      seed=args.seed, max_users=args.max_users)) as run:
        with bar:
            if subject.model is not None:
                audits = audit_model(subject.model, subject.labels, progress=progress, **options)
            else:
                audits = {"user": run_audit(subject.table, subject.labels, progress=progress,
                                            representation_name=subject.source, **options)}
        if run is not None:
            ranking = None
            if subject.model is not None:
                from .metrics import evaluate_full

                ranking = evaluate_full(subject.model.scorer(), subject.split, "test", device=device)
            run.finish(**audit_fields(audits, ranking))
    for audit in audits.values():
        print(audit.to_markdown())
    if args.report:
        with open(args.report, "w") as handle:
            handle.write("[" + ",\n".join(a.to_json() for a in audits.values()) + "]")
        print(f"report written to {args.report}")
    return _gate(worst_verdicts(audits), tolerance)


def _gate(verdicts: dict, tolerance: float) -> int:
    failing = [v for v in verdicts.values() if v.status != "no leak"]
    for verdict in failing:
        print(f"GATE FAILED: {verdict.attribute} {verdict.status} on {verdict.representation} (AUC {verdict.auc:.3f}, "
              f"|AUC - 0.5| = {verdict.leakage:.3f} > {tolerance:.3f}, p = {verdict.p_value:.3g})")
    if not failing:
        print(f"gate passed: no attribute leaks past |AUC - 0.5| = {tolerance:.3f} on any representation")
    return 1 if failing else 0


def add_unlearn(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "unlearn", help="attribute unlearning aimed at a leakage target, then a full audit",
        description="Edit the user table so the attributes can no longer be inferred, aiming at |AUC - 0.5| <= "
                    "TARGET_GAP for every default attacker on every representation, then audit the result. Writes an "
                    "edited model (with --model) or the edited table in the upload's format, ids kept. Exit 0 when "
                    "the audit passes, 1 when an attribute still leaks, 2 on bad input.")
    _add_subject(parser)
    parser.add_argument("--method", default="d2d_r",
                        help="d2d_r, lego, joint_d2d, sequential_d2d, leace, transport, u2u_r_closed, ...; "
                             "default d2d_r (lego when several attributes)")
    parser.add_argument("--target-gap", type=float, default=0.05, help="tolerance |AUC - 0.5| (0 = fixed strength)")
    parser.add_argument("--param", action="append", metavar="NAME=VALUE", help="a method hyper-parameter")
    parser.add_argument("--out", required=True, help="folder (with --model) or file for the edited table")
    parser.add_argument("--report", help="write the comparison as JSON here")
    parser.add_argument("--permutations", type=int, default=200)
    _add_common(parser)
    parser.set_defaults(handler=run_unlearn_command)


def _method_params(name: str, specs: list[str] | None, target_gap: float) -> dict:
    from .unlearning.attribute import UNLEARNERS, hyperparameters

    if name not in UNLEARNERS:
        raise DataError(f"unknown method {name!r}; choose one of {', '.join(UNLEARNERS)}")
    known = {h.name: h for h in hyperparameters(name)}
    params = {"target_gap": target_gap} if "target_gap" in known else {}
    for spec in specs or []:
        key, sep, value = spec.partition("=")
        if not sep or key not in known:
            raise DataError(f"--param {spec!r}: expected NAME=VALUE with NAME one of {', '.join(known)}")
        kind = known[key].kind
        params[key] = (value.lower() in ("1", "true", "yes")) if kind is bool else kind(value)
    return params


def run_unlearn_command(args: argparse.Namespace) -> int:
    from .device import get_device
    from .evaluation import evaluate_unlearning
    from .unlearning.attribute import make_unlearner

    device = get_device(args.device)
    subject = _load_subject(args, device)
    method = args.method if not (args.method == "d2d_r" and len(subject.labels) > 1) else "lego"
    if method != args.method:
        print(f"note: {len(subject.labels)} attributes chosen, so LEGO-style is used (D2D-R is single-attribute "
              f"by default; pass --method joint_d2d for the joint run)", file=sys.stderr)
    params = _method_params(method, args.param, args.target_gap)
    from .recording import recorded, unlearning_fields
    from .unlearning.attribute import UNLEARNERS

    bar, progress = _progress_bar()
    with recorded(_store(args), "unlearning", UNLEARNERS[method].label, source="cli", model=_model_label(subject),
                  attributes=list(subject.labels), device=str(device), **_subject_data(subject),
                  params={"method": method, **params, "permutations": args.permutations, "seed": args.seed}) as run:
        with bar:
            result = make_unlearner(method, **params).fit_transform(subject.table, subject.labels, subject.model,
                                                                    subject.split, progress=progress, device=device)
            comparison = evaluate_unlearning(subject.table, [result], subject.labels, subject.model, subject.split,
                                             n_permutations=args.permutations, seed=args.seed, progress=progress,
                                             tolerance=args.target_gap or 0.05, device=device)
        if run is not None:
            run.finish(**unlearning_fields(comparison.rows[-1], comparison.rows[0]))
    print(f"{result.label}: {result.seconds:.2f} s on {result.device}. {result.notes}")
    from .unlearning.attribute import transport_hint

    if hint := transport_hint([result]):
        print(f"note: {hint}", file=sys.stderr)
    frame = comparison.to_frame(intervals=False)
    print(frame.to_markdown(index=False, floatfmt=".3f"))
    written = _write_edited(args, subject, result)
    print(f"edited {'model' if subject.model is not None else 'table'} written to {written}")
    if args.report:
        frame.to_json(args.report, orient="records", indent=1)
        print(f"report written to {args.report}")
    return _gate(comparison.rows[-1].verdicts, args.target_gap or 0.05)


def _write_edited(args: argparse.Namespace, subject: Subject, result) -> str:
    """The edited model (loadable like a trained one) or the edited table in the upload's format, ids kept."""
    from pathlib import Path

    if subject.model is not None:
        from .checkpoint import save_edited_model

        return str(save_edited_model(args.out, subject.model, subject.meta, result))
    from .uploads import save_embeddings

    return str(save_embeddings(args.out, result.table.numpy(), subject.user_ids, like=Path(args.embeddings).suffix))


def add_report(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="write a self-contained report (HTML, JSON or CSV) of kept runs",
        description="One file per run or comparison, from the run history: dataset and fingerprint, model, date, "
                    "device, library versions, protocol, every number with its interval, verdicts in plain words. "
                    "The HTML embeds its plots and plotly.js, so it opens with no network.")
    parser.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="runs to report (a unique prefix is enough)")
    parser.add_argument("--out", help="file to write (.html, .json or .csv)")
    parser.add_argument("--format", choices=["html", "json", "csv"], default=None,
                        help="default: from the --out suffix, else html")
    parser.add_argument("--list", action="store_true", help="list the kept runs instead")
    _add_runs(parser, argparse.SUPPRESS)
    parser.set_defaults(handler=run_report_command)


def run_report_command(args: argparse.Namespace) -> int:
    from .report import comparison_frame, write_report

    store = _store(args)
    if args.list or not args.run_ids:
        frame = comparison_frame(store.records())
        if frame.empty:
            print(f"no runs kept in {store.location}")
        else:
            print(frame[["run", "date", "kind", "label", "status", "verdict", "dataset", "model"]].to_markdown(
                index=False))
        return 0
    if not args.out:
        raise DataError("give --out FILE.html (or .json, .csv) for the report")
    path = write_report(store, args.run_ids, args.out, args.format)
    print(f"report of {len(args.run_ids)} run(s) written to {path}")
    return 0


from .unlearning.deletion.command import add_forget  # noqa: E402  (data deletion: its own module)

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [add_train, add_audit, add_unlearn, add_report,
                                                                add_forget]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core", description="Privacy audit for recommender systems")
    _add_runs(parser)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(subparsers)
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

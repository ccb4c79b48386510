"""Data-deletion benchmark (SPEC section 6): every method against Retrain on MovieLens-100K and on larger synthetic
interaction sets.

Rows: MovieLens-100K × {BPR-MF, LightGCN} × {1% of training interactions, 5% of users}, every method that applies;
then the built-in synthetic generator at growing user counts (default 1,000, 5,000 and 20,000 users), BPR-MF, 1% of
interactions, to show how each method's cost grows against Retrain's. Each row: the verdict (completeness within the
tolerance of Retrain's), wall time of the update alone and speed-up over Retrain measured in this process on this
device, NDCG@20 (and relative to Retrain's), forgotten-vs-retained AUC, forget hit rate@20, median forgotten rank,
membership-inference AUC and Jaccard@20 with Retrain. The original models are trained with the default settings
(early stopping on validation NDCG@20); Retrain uses the same settings and seed.

The issue's target, checked on ML-100K BPR-MF 1%: LightUL-style ≥ 10× faster than Retrain, NDCG@20 within 3% of
Retrain's, forget hit rate@20 ≤ Retrain's + 0.02.

Writes the "deletion" section of bench/RESULTS.md after every part (a stopped run keeps what it measured).
Usage: nice -n 10 python bench/deletion.py [--device cpu|cuda] [--threads 1] [--parts ml100k-bpr ml100k-lightgcn
       synthetic] [--requests interactions users] [--sizes 1000 5000 20000]
"""
from __future__ import annotations

import argparse
import time

import pandas as pd
import torch
from common import table, write_section

from core.data import default_ml100k_dir, load_movielens_100k, make_synthetic, split_per_user
from core.device import describe, get_device
from core.training import DEFAULT_LR, TrainConfig, train_model
from core.unlearning.deletion import DELETERS, make_deleter, random_interactions, random_users, run_deletion

REQUESTS = {"interactions": ("1% of interactions", lambda split: random_interactions(split, 0.01, seed=0)),
            "users": ("5% of users", lambda split: random_users(split, 0.05, seed=0))}
COLUMNS = ["verdict", "seconds", "speed-up vs Retrain", "NDCG@20", "NDCG@20 / Retrain's", "forgotten-vs-retained AUC",
           "forget HR@20", "median forgotten rank", "MIA AUC", "Jaccard@20 vs Retrain"]


def run_part(name: str, kind: str, split, request_names, device, rows: list[dict]) -> None:
    config = TrainConfig(lr=DEFAULT_LR[kind])
    start = time.perf_counter()
    trained = train_model(kind, split, config, device=device)
    print(f"{name} {kind}: trained in {time.perf_counter() - start:.1f} s (best epoch {trained.best_epoch})")
    for request_name in request_names:
        label, build = REQUESTS[request_name]
        request = build(split)
        methods = [make_deleter(n) for n in DELETERS if make_deleter(n).applies(trained.model)]
        report = run_deletion(trained.model, request, methods, device=device, train_config=config)
        frame = report.to_frame()
        for record in frame.to_dict("records"):
            rows.append({"data": name, "model": trained.model.label, "request": label, "method": record["method"],
                         **{c: record[c] for c in COLUMNS}})
        print(table(pd.DataFrame(rows[-len(frame):]), floatfmt=".3f"))


def must_show(rows: list[dict]) -> str:
    """The issue's check on ML-100K BPR-MF 1%, stated whatever it shows."""
    frame = pd.DataFrame(rows)
    part = frame[(frame["data"] == "MovieLens-100K") & (frame["model"] == "BPR-MF")
                 & (frame["request"] == "1% of interactions")]
    if part.empty:
        return "ML-100K BPR-MF 1% was not run."
    light, retrain = part[part["method"] == "LightUL-style"].iloc[0], part[part["method"] == "Retrain"].iloc[0]
    ratio = light["NDCG@20 / Retrain's"]
    checks = [
        (light["speed-up vs Retrain"] >= 10, f"speed-up {light['speed-up vs Retrain']:.1f}× (target ≥ 10×)"),
        (ratio >= 0.97, f"NDCG@20 {light['NDCG@20']:.4f} = {ratio:.3f} of Retrain's {retrain['NDCG@20']:.4f} "
                        "(target ≥ 0.97)"),
        (light["forget HR@20"] <= retrain["forget HR@20"] + 0.02,
         f"forget HR@20 {light['forget HR@20']:.3f} vs Retrain's {retrain['forget HR@20']:.3f} (target ≤ +0.02)"),
    ]
    return "LightUL-style on ML-100K BPR-MF, 1% of interactions: " + "; ".join(
        f"{text}: {'met' if ok else 'MISSED'}" for ok, text in checks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 by default: on a shared machine more threads spin and time noise)")
    parser.add_argument("--parts", nargs="*", default=["ml100k-bpr", "ml100k-lightgcn", "synthetic"])
    parser.add_argument("--requests", nargs="*", default=list(REQUESTS), choices=list(REQUESTS))
    parser.add_argument("--sizes", nargs="*", type=int, default=[1_000, 5_000, 20_000])
    parser.add_argument("--section", default="deletion")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = get_device(args.device)
    rows: list[dict] = []

    def write() -> None:
        body = (f"Device: {describe(device)}. Tolerance: completeness matches Retrain when the forgotten-vs-retained "
                "AUC is within −0.05/+0.10 of Retrain's, forget HR@20 at most 0.02 and MIA AUC at most 0.05 above "
                "Retrain's. Seconds: the update alone (evaluation excluded), same process and device as Retrain. "
                "Every method at its default settings.\n\n" + must_show(rows) + "\n\n" + table(pd.DataFrame(rows),
                                                                                         floatfmt=".3f"))
        write_section(args.section, "Data deletion: methods against Retrain", body)

    folder = default_ml100k_dir()
    for part in args.parts:
        if part.startswith("ml100k"):
            if folder is None:
                print("MovieLens-100K not found: skipped")
                continue
            split = split_per_user(load_movielens_100k(folder), seed=0)
            run_part("MovieLens-100K", part.split("-", 1)[1], split, args.requests, device, rows)
            write()
        elif part == "synthetic":
            for size in args.sizes:
                split = split_per_user(make_synthetic(n_users=size), seed=0)
                run_part(f"synthetic {size:,} users", "bpr", split, ["interactions"], device, rows)
                write()
    print(must_show(rows))


if __name__ == "__main__":
    main()

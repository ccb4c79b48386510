"""The run store: every audit or unlearning run kept for comparison and export (SQLite + .npy artifacts).

A run is a small record (kind, label, dataset fingerprint, parameters, flat metrics) plus optional named arrays
(an edited user table, say). Records live in one SQLite file; arrays in .npy files beside it, written and read
without pickle. With `folder=None` everything stays in memory (what the dashboard uses per session).
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import sqlite3
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

_SCHEMA = """
create table if not exists runs (
    run_id text primary key,
    created text not null,
    kind text not null,
    label text not null,
    dataset text not null,
    params text not null,
    metrics text not null
)
"""


@dataclass(frozen=True)
class RunRecord:
    """One kept run: what was done (kind, label, params), on what (dataset), and what it measured (metrics)."""

    run_id: str
    created: str
    kind: str  # e.g. "train", "audit", "attribute_unlearning"
    label: str
    dataset: str
    params: dict = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def _finite_or_none(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else float(value)


class RunStore:
    """Keeps runs; `folder=None` keeps them in memory, a folder keeps them across sessions."""

    def __init__(self, folder: str | Path | None = None):
        self.folder = Path(folder) if folder is not None else None
        self._arrays: dict[tuple[str, str], np.ndarray] = {}
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / "artifacts").mkdir(exist_ok=True)
            self._db = sqlite3.connect(self.folder / "runs.sqlite", check_same_thread=False)
        else:
            self._db = sqlite3.connect(":memory:", check_same_thread=False)
        self._db.execute(_SCHEMA)
        self._db.commit()

    def add(
        self, kind: str, label: str, dataset: str, params: dict | None = None, metrics: dict[str, float] | None = None,
        arrays: dict[str, np.ndarray] | None = None,
    ) -> RunRecord:
        """Keep a run and its arrays; returns its record (with a fresh id and timestamp)."""
        record = RunRecord(
            run_id=uuid.uuid4().hex[:12],
            created=_dt.datetime.now().isoformat(timespec="seconds"),
            kind=kind, label=label, dataset=dataset,
            params=dict(params or {}),
            metrics={k: _finite_or_none(v) for k, v in (metrics or {}).items()},
        )
        for name, array in (arrays or {}).items():
            self._put_array(record.run_id, name, np.asarray(array))
        self._db.execute(
            "insert into runs values (?, ?, ?, ?, ?, ?, ?)",
            (record.run_id, record.created, kind, label, dataset,
             json.dumps(record.params, default=str), json.dumps(record.metrics)),
        )
        self._db.commit()
        return record

    def _put_array(self, run_id: str, name: str, array: np.ndarray) -> None:
        if not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"artifact name {name!r}: use letters, digits, '-' and '_' only")
        if array.dtype == object:
            raise ValueError(f"artifact {name!r}: object arrays cannot be stored without pickle")
        if self.folder is None:
            self._arrays[(run_id, name)] = array.copy()
        else:
            np.save(self.folder / "artifacts" / f"{run_id}-{name}.npy", array, allow_pickle=False)

    def array(self, run_id: str, name: str) -> np.ndarray:
        """A stored array of a run (never unpickled)."""
        if self.folder is None:
            if (run_id, name) not in self._arrays:
                raise KeyError(f"run {run_id} has no artifact {name!r}")
            return self._arrays[(run_id, name)].copy()
        path = self.folder / "artifacts" / f"{run_id}-{name}.npy"
        if not path.exists():
            raise KeyError(f"run {run_id} has no artifact {name!r}")
        return np.load(path, allow_pickle=False)

    def records(self, kind: str | None = None) -> list[RunRecord]:
        """Kept runs, oldest first, optionally of one kind."""
        query = "select * from runs" + (" where kind = ?" if kind else "") + " order by created, rowid"
        rows = self._db.execute(query, (kind,) if kind else ()).fetchall()
        return [RunRecord(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), json.loads(r[6])) for r in rows]

    def get(self, run_id: str) -> RunRecord:
        for record in self.records():
            if record.run_id == run_id:
                return record
        raise KeyError(f"no run {run_id!r}")

    def delete(self, run_id: str) -> None:
        """Forget a run and its arrays."""
        self._db.execute("delete from runs where run_id = ?", (run_id,))
        self._db.commit()
        if self.folder is None:
            for key in [k for k in self._arrays if k[0] == run_id]:
                del self._arrays[key]
        else:
            for path in (self.folder / "artifacts").glob(f"{run_id}-*.npy"):
                path.unlink()

    def clear(self, kind: str | None = None) -> None:
        for record in self.records(kind):
            self.delete(record.run_id)

    def to_frame(self, kind: str | None = None) -> pd.DataFrame:
        """One row per run: id, time, kind, label, dataset, then every metric as a column (for comparison)."""
        rows = [
            {"run": r.run_id, "created": r.created, "kind": r.kind, "label": r.label, "dataset": r.dataset, **r.metrics}
            for r in self.records(kind)
        ]
        return pd.DataFrame(rows)

    def export_json(self, kind: str | None = None) -> str:
        """Every record with its parameters and metrics, as JSON (arrays are exported separately)."""
        return json.dumps([r.__dict__ for r in self.records(kind)], indent=1, default=str)

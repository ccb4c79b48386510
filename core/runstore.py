"""The run store: every training, audit, unlearning and deletion run kept in one embedded SQLite database.

A run is a record (kind, label, status, the dataset and its fingerprint, the model, the attributes, parameters,
flat metrics, verdicts, result tables, runtime, device, library versions) plus artifacts on disk beside the
database (.npy, .safetensors, .parquet, .json: never pickle). The database uses WAL so the app and the command
line can write at once; its schema is versioned (`schema_version` table) and migrated forward on open.

A run starts "running" with its owner's process id and a start token (boot id + the process's start time), and
ends "finished", "failed" or "cancelled", committed at once. A run still "running" whose owner process is gone
(killed, crashed, restarted) is shown as "interrupted". Deleting a run deletes its files. The database, its
folder and every artifact are created readable by the owner only (0o600 files, 0o700 folders).

Location: `RunStore(path)` takes a database file (`….sqlite`) or a folder (the database is `runs.sqlite` in it);
`default_location()` is $PRIVACY_AUDIT_RUNS or data/runs/runs.sqlite. `RunStore(None)` keeps the database in
memory and the artifacts in a temporary folder (for tests and throwaway sessions).
"""
from __future__ import annotations

import datetime as _dt
import io
import json
import math
import os
import platform
import shutil
import sqlite3
import tempfile
import threading
import uuid
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

ENV_VAR = "PRIVACY_AUDIT_RUNS"
SCHEMA_VERSION = 2
KINDS = ("training", "audit", "unlearning", "deletion")  # "deletion" is recorded by `python -m core forget`
STATUSES = ("running", "finished", "failed", "cancelled", "interrupted")
ARTIFACT_FORMATS = (".npy", ".safetensors", ".parquet", ".json")
VERSIONED_PACKAGES = ("torch", "numpy", "pandas", "scikit-learn", "xgboost-cpu", "xgboost", "scipy", "safetensors",
                      "streamlit", "plotly")


def default_location() -> Path:
    """Where runs are kept unless told otherwise: $PRIVACY_AUDIT_RUNS, else data/runs/runs.sqlite in the repo."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[1] / "data" / "runs" / "runs.sqlite"


def library_versions() -> dict[str, str]:
    """Python and the numerical libraries' versions, as a report states them."""
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------- process liveness


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_token(pid: int) -> str:
    """What identifies a live process beyond its id (ids are reused): the boot id and the process's start time in
    clock ticks since boot (Linux /proc); '' where /proc is unavailable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    start_ticks = stat.rsplit(")", 1)[1].split()[19]
    return f"{_boot_id()}:{start_ticks}"


def process_alive(pid: int | None, token: str | None) -> bool:
    """Whether the process that started a run still runs: same id and, where known, same start token."""
    if not pid:
        return False
    if token and Path("/proc").is_dir():
        return process_token(pid) == token
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class RunRecord:
    """One kept run: what was done, on what, with which settings, what it measured and how it ended."""

    run_id: str
    created: str
    kind: str  # "training", "audit", "unlearning", "deletion"
    label: str
    dataset: str  # the dataset's name
    params: dict = field(default_factory=dict)
    metrics: dict[str, float | None] = field(default_factory=dict)
    status: str = "finished"
    finished: str | None = None
    fingerprint: str = ""
    model: str = ""
    attributes: tuple[str, ...] = ()
    verdicts: dict = field(default_factory=dict)  # attribute -> {status, auc, auc_low, auc_high, gap, …}
    results: dict = field(default_factory=dict)  # tables (as record lists), notes, protocol: what reports show
    seconds: float | None = None
    device: str = ""
    versions: dict = field(default_factory=dict)
    source: str = ""  # "app" or "cli"
    message: str = ""  # why a run failed, was cancelled or interrupted
    artifacts: tuple[str, ...] = ()

    @property
    def verdict(self) -> str:
        """The worst verdict over the attributes ('leaks', 'inconclusive', 'no leak'); a kind with verdicts of its
        own (a deletion's) shows them as they are; '' when none."""
        statuses = {v.get("status") for v in self.verdicts.values() if v.get("status")}
        worst = next((s for s in ("leaks", "inconclusive", "no leak") if s in statuses), "")
        return worst or ", ".join(sorted(statuses))

    def to_dict(self) -> dict:
        return {**asdict(self), "attributes": list(self.attributes), "artifacts": list(self.artifacts),
                "verdict": self.verdict}


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null (not an invalid number), numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _dumps(value: Any) -> str:
    return json.dumps(_clean(value))


def _finite_or_none(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------------------------------------- schema


def _migrate_to_1(db: sqlite3.Connection, root: Path) -> None:
    """Version 1: the first store (one table of finished runs; arrays as artifacts/<run>-<name>.npy)."""
    db.execute("""create table if not exists runs (
        run_id text primary key, created text not null, kind text not null, label text not null,
        dataset text not null, params text not null, metrics text not null)""")


_V2_COLUMNS = (
    ("status", "text not null default 'finished'"), ("finished", "text"), ("fingerprint", "text not null default ''"),
    ("model", "text not null default ''"), ("attributes", "text not null default '[]'"),
    ("verdicts", "text not null default '{}'"), ("results", "text not null default '{}'"), ("seconds", "real"),
    ("device", "text not null default ''"), ("versions", "text not null default '{}'"),
    ("source", "text not null default ''"), ("message", "text not null default ''"), ("owner_pid", "integer"),
    ("owner_token", "text not null default ''"),
)


def _migrate_to_2(db: sqlite3.Connection, root: Path) -> None:
    """Version 2: status and ownership (interrupted runs), provenance (fingerprint, model, device, versions),
    verdicts and result tables, and an artifacts table; version-1 arrays move into one folder per run."""
    present = {row[1] for row in db.execute("pragma table_info(runs)")}
    for name, declaration in _V2_COLUMNS:
        if name not in present:
            db.execute(f"alter table runs add column {name} {declaration}")
    db.execute("""create table if not exists artifacts (
        run_id text not null references runs(run_id) on delete cascade, name text not null,
        bytes integer not null, primary key (run_id, name))""")
    db.execute("create index if not exists runs_kind on runs(kind, created)")
    db.execute("update runs set kind = 'unlearning' where kind = 'attribute_unlearning'")
    db.execute("update runs set kind = 'training' where kind = 'train'")
    old = root / "artifacts"
    run_ids = {row[0] for row in db.execute("select run_id from runs")}
    for path in sorted(old.glob("*-*.npy")) if old.is_dir() else []:
        run_id, _, name = path.stem.partition("-")
        if run_id not in run_ids:
            continue
        folder = _private_dir(old / run_id)
        target = folder / f"{name}.npy"
        path.replace(target)
        os.chmod(target, 0o600)
        db.execute("insert or replace into artifacts values (?, ?, ?)", (run_id, target.name, target.stat().st_size))


MIGRATIONS: dict[int, Callable[[sqlite3.Connection, Path], None]] = {1: _migrate_to_1, 2: _migrate_to_2}


def schema_version(db: sqlite3.Connection) -> int:
    """The stored schema version: 0 for an empty database, 1 for the first store (no version table)."""
    tables = {row[0] for row in db.execute("select name from sqlite_master where type = 'table'")}
    if "schema_version" in tables:
        row = db.execute("select max(version) from schema_version").fetchone()
        return int(row[0] or 0)
    return 1 if "runs" in tables else 0


def _private_dir(path: Path) -> Path:
    """A folder readable by the owner only (created 0o700, tightened if it existed)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _write_private(path: Path, payload: bytes) -> None:
    """Write a file created 0o600 (never world-readable, not even for a moment)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(payload)
    os.chmod(path, 0o600)


def _artifact_bytes(name: str, value: Any) -> bytes:
    """Serialise an artifact by its file extension, without pickle."""
    suffix = Path(name).suffix
    if suffix == ".npy":
        array = np.asarray(value)
        if array.dtype == object:
            raise ValueError(f"artifact {name!r}: object arrays cannot be stored without pickle")
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        return buffer.getvalue()
    if suffix == ".safetensors":
        from safetensors.numpy import save

        return save({k: np.ascontiguousarray(np.asarray(v)) for k, v in dict(value).items()})
    if suffix == ".parquet":
        buffer = io.BytesIO()
        pd.DataFrame(value).to_parquet(buffer, index=False)
        return buffer.getvalue()
    if suffix == ".json":
        return json.dumps(_clean(value), indent=1).encode()
    raise ValueError(f"artifact {name!r}: use one of {', '.join(ARTIFACT_FORMATS)} (pickle is never used)")


def _check_name(name: str) -> str:
    stem, suffix = Path(name).stem, Path(name).suffix
    if not suffix:
        name, suffix = f"{name}.npy", ".npy"
    if (Path(name).name != name or not stem.replace("_", "").replace("-", "").isalnum()
            or suffix not in ARTIFACT_FORMATS):
        raise ValueError(f"artifact name {name!r}: use letters, digits, '-' and '_' only, with one of "
                         f"{', '.join(ARTIFACT_FORMATS)}")
    return name


# ---------------------------------------------------------------------------------------------- the store


class RunStore:
    """Keeps runs in SQLite (WAL) with their artifacts beside it; safe to share between threads and processes."""

    def __init__(self, location: str | os.PathLike | None = None):
        self._tmp = None
        if location is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="runs-")
            self.path, self.root = None, Path(self._tmp.name)
        else:
            location = Path(location).expanduser()
            if location.suffix in (".sqlite", ".sqlite3", ".db"):
                self.path = location
            else:
                self.path = location / "runs.sqlite"
            self.root = self.path.parent
        if not self.root.exists():  # a folder we create is ours: owner-only; an existing one (say /tmp) is left as is
            _private_dir(self.root)
        self.artifacts_root = _private_dir(self.root / "artifacts")
        self._lock = threading.RLock()
        if self.path is not None:
            if not self.path.exists():
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
            os.chmod(self.path, 0o600)  # SQLite gives its -wal and -shm files the database's permissions
        self._db = sqlite3.connect(self.path or ":memory:", timeout=30, check_same_thread=False,
                                   isolation_level=None)
        self._db.execute("pragma busy_timeout = 30000")
        if self.path is not None:
            self._db.execute("pragma journal_mode = wal")
            self._db.execute("pragma synchronous = normal")
        self._db.execute("pragma foreign_keys = on")
        self._pid, self._token = os.getpid(), process_token(os.getpid())
        self._migrate()
        self.mark_interrupted()

    def __repr__(self) -> str:
        return f"RunStore({str(self.path) if self.path else 'in memory'})"

    @property
    def location(self) -> str:
        """Where the runs are kept, in words (for the settings panel and reports)."""
        return str(self.path) if self.path else f"in memory (artifacts in {self.root})"

    def close(self) -> None:
        with self._lock:
            self._db.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    # ------------------------------------------------------------------ schema

    def _migrate(self) -> None:
        with self._lock:
            self._db.execute("begin immediate")  # one process migrates; the others wait and then see it done
            try:
                current = schema_version(self._db)
                if current > SCHEMA_VERSION:
                    raise RuntimeError(f"{self.location}: written by a newer version of this tool (schema "
                                       f"{current} > {SCHEMA_VERSION}); upgrade or choose another --runs file")
                for version in range(current + 1, SCHEMA_VERSION + 1):
                    MIGRATIONS[version](self._db, self.root)
                if current < SCHEMA_VERSION:
                    self._db.execute("create table if not exists schema_version (version integer not null, "
                                     "applied text not null)")
                    self._db.execute("insert into schema_version values (?, ?)", (SCHEMA_VERSION, _now()))
                self._db.execute("commit")
            except BaseException:
                self._db.execute("rollback")
                raise

    @property
    def schema_version(self) -> int:
        with self._lock:
            return schema_version(self._db)

    # ------------------------------------------------------------------ writing

    def start(self, kind: str, label: str, *, dataset: str = "", fingerprint: str = "", model: str = "",
              attributes=(), params: dict | None = None, device: str = "", source: str = "") -> str:
        """Record a run as "running" (committed at once, owned by this process); returns its id."""
        run_id = uuid.uuid4().hex[:12]
        with self._lock:
            self._db.execute(
                "insert into runs (run_id, created, kind, label, dataset, params, metrics, status, fingerprint, model,"
                " attributes, device, versions, source, owner_pid, owner_token) values "
                "(?, ?, ?, ?, ?, ?, '{}', 'running', ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, _now(), kind, label, dataset, _dumps(params or {}), fingerprint, model,
                 _dumps(list(attributes)), str(device), _dumps(library_versions()), source, self._pid, self._token))
        return run_id

    def finish(self, run_id: str, *, metrics: dict | None = None, verdicts: dict | None = None,
               results: dict | None = None, seconds: float | None = None, artifacts: dict | None = None,
               label: str | None = None, params: dict | None = None, device: str | None = None,
               status: str = "finished", message: str = "") -> None:
        """Record how a run ended, with its numbers and artifacts, committed at once."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; one of {STATUSES}")
        for name, value in (artifacts or {}).items():
            self.put_artifact(run_id, name, value)
        self.seal(run_id)
        updates = {"status": status, "finished": _now(), "message": message}
        if metrics is not None:
            updates["metrics"] = _dumps({k: _finite_or_none(v) for k, v in metrics.items()})
        if verdicts is not None:
            updates["verdicts"] = _dumps(verdicts)
        if results is not None:
            updates["results"] = _dumps(results)
        if seconds is not None:
            updates["seconds"] = float(seconds)
        if label is not None:
            updates["label"] = label
        if params is not None:
            updates["params"] = _dumps(params)
        if device is not None:
            updates["device"] = str(device)
        assignments = ", ".join(f"{k} = ?" for k in updates)
        with self._lock:
            changed = self._db.execute(f"update runs set {assignments} where run_id = ?",
                                       (*updates.values(), run_id)).rowcount
        if not changed:
            raise KeyError(f"no run {run_id!r} (was it deleted?)")

    def fail(self, run_id: str, message: str, status: str = "failed") -> None:
        """Record that a run failed or was cancelled, with the reason in words."""
        self.finish(run_id, status=status, message=message)

    def add(self, kind: str, label: str, dataset: str, params: dict | None = None,
            metrics: dict[str, float] | None = None, arrays: dict[str, np.ndarray] | None = None,
            **fields) -> RunRecord:
        """Record a run that already finished, in one call; returns its record."""
        start_fields = {k: fields.pop(k) for k in ("fingerprint", "model", "attributes", "device", "source")
                        if k in fields}
        run_id = self.start(kind, label, dataset=dataset, params=params, **start_fields)
        try:
            self.finish(run_id, metrics=metrics or {}, artifacts=arrays, **fields)
        except BaseException:
            self.delete(run_id)
            raise
        return self.get(run_id)

    # ------------------------------------------------------------------ artifacts

    def run_folder(self, run_id: str) -> Path:
        """The run's artifact folder (0o700), for writers that produce files themselves (a saved model)."""
        return _private_dir(self.artifacts_root / run_id)

    def put_artifact(self, run_id: str, name: str, value: Any) -> Path:
        """Write an artifact (format by extension: .npy array, .safetensors dict of arrays, .parquet frame,
        .json) into the run's folder, owner-only."""
        name = _check_name(name)
        payload = _artifact_bytes(name, value)
        path = self.run_folder(run_id) / name
        _write_private(path, payload)
        with self._lock:
            self._db.execute("insert or replace into artifacts values (?, ?, ?)", (run_id, name, len(payload)))
        return path

    def seal(self, run_id: str) -> None:
        """Register and tighten every file in the run's folder (written by `put_artifact` or by a writer given
        `run_folder`): owner-only permissions, one artifacts row each."""
        folder = self.artifacts_root / run_id
        if not folder.is_dir():
            return
        with self._lock:
            for path in sorted(folder.iterdir()):
                if path.is_file() and path.suffix in ARTIFACT_FORMATS:
                    os.chmod(path, 0o600)
                    self._db.execute("insert or replace into artifacts values (?, ?, ?)",
                                     (run_id, path.name, path.stat().st_size))

    def artifact(self, run_id: str, name: str) -> Any:
        """A stored artifact, read without pickle: an array, a dict of arrays, a frame or JSON."""
        name = _check_name(name)
        path = self.artifacts_root / run_id / name
        if not path.is_file():
            raise KeyError(f"run {run_id} has no artifact {name!r}")
        suffix = path.suffix
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".safetensors":
            from safetensors.numpy import load_file

            return load_file(str(path))
        if suffix == ".parquet":
            return pd.read_parquet(path)
        return json.loads(path.read_text())

    def array(self, run_id: str, name: str) -> np.ndarray:
        """A stored .npy array of a run (never unpickled)."""
        return self.artifact(run_id, name if Path(name).suffix else f"{name}.npy")

    # ------------------------------------------------------------------ reading

    def mark_interrupted(self) -> int:
        """Runs left "running" by a process that is gone become "interrupted"; returns how many."""
        with self._lock:
            rows = self._db.execute("select run_id, owner_pid, owner_token from runs where status = 'running'"
                                    ).fetchall()
            dead = [r[0] for r in rows if not (r[1] == self._pid and r[2] == self._token)
                    and not process_alive(r[1], r[2])]
            for run_id in dead:
                self._db.execute("update runs set status = 'interrupted', message = ? where run_id = ? and "
                                 "status = 'running'",
                                 ("the process running it stopped before it finished (server restarted or killed)",
                                  run_id))
        return len(dead)

    _COLUMNS = ("run_id", "created", "kind", "label", "dataset", "params", "metrics", "status", "finished",
                "fingerprint", "model", "attributes", "verdicts", "results", "seconds", "device", "versions", "source",
                "message")

    def _record(self, row: tuple, artifacts: tuple[str, ...]) -> RunRecord:
        values = dict(zip(self._COLUMNS, row))
        for key in ("params", "metrics", "verdicts", "results", "versions"):
            values[key] = json.loads(values[key] or "{}")
        values["attributes"] = tuple(json.loads(values["attributes"] or "[]"))
        return RunRecord(**values, artifacts=artifacts)

    def records(self, kind: str | None = None, status: str | None = None) -> list[RunRecord]:
        """Kept runs, oldest first, optionally of one kind or status (runs of dead processes shown interrupted)."""
        self.mark_interrupted()
        clauses, values = [], []
        if kind:
            clauses.append("kind = ?")
            values.append(kind)
        if status:
            clauses.append("status = ?")
            values.append(status)
        where = (" where " + " and ".join(clauses)) if clauses else ""
        with self._lock:
            rows = self._db.execute(f"select {', '.join(self._COLUMNS)} from runs{where} order by created, rowid",
                                    values).fetchall()
            names: dict[str, list[str]] = {}
            for run_id, name in self._db.execute("select run_id, name from artifacts order by name"):
                names.setdefault(run_id, []).append(name)
        return [self._record(row, tuple(names.get(row[0], ()))) for row in rows]

    def get(self, run_id: str) -> RunRecord:
        self.mark_interrupted()
        with self._lock:
            row = self._db.execute(f"select {', '.join(self._COLUMNS)} from runs where run_id = ?",
                                   (run_id,)).fetchone()
            names = tuple(r[0] for r in self._db.execute("select name from artifacts where run_id = ? order by name",
                                                          (run_id,)))
        if row is None:
            raise KeyError(f"no run {run_id!r}")
        return self._record(row, names)

    def delete(self, run_id: str) -> None:
        """Forget a run and delete its files."""
        with self._lock:
            self._db.execute("delete from artifacts where run_id = ?", (run_id,))
            self._db.execute("delete from runs where run_id = ?", (run_id,))
        folder = self.artifacts_root / run_id
        if folder.is_dir() and folder.parent == self.artifacts_root:
            shutil.rmtree(folder)

    def clear(self, kind: str | None = None) -> None:
        for record in self.records(kind):
            self.delete(record.run_id)

    def to_frame(self, kind: str | None = None) -> pd.DataFrame:
        """One row per run: id, time, kind, label, status, dataset, model, verdict, runtime, then every metric."""
        rows = [
            {"run": r.run_id, "created": r.created, "kind": r.kind, "label": r.label, "status": r.status,
             "dataset": r.dataset, "fingerprint": r.fingerprint, "model": r.model,
             "attributes": ", ".join(r.attributes), "verdict": r.verdict, "runtime s": r.seconds,
             "device": r.device, "source": r.source, **r.metrics}
            for r in self.records(kind)
        ]
        return pd.DataFrame(rows)

    def export_json(self, kind: str | None = None) -> str:
        """Every record with its parameters, metrics and verdicts, as JSON (artifacts are files, named)."""
        return json.dumps([r.to_dict() for r in self.records(kind)], indent=1, default=str)


def open_store(location: str | os.PathLike | None = None) -> RunStore:
    """The store at `location`, else at the default location (see `default_location`)."""
    return RunStore(location if location is not None else default_location())


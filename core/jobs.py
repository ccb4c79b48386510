"""Background jobs: long computations (training, audits, unlearning, deletion) run on worker threads, report
progress, stop within seconds when cancelled, and record their runs in the run store.

`JobRunner.submit(key, fn)` starts `fn(progress, cancel)` on a thread, once per key: submitting a key whose job is
running or finished returns that job (a page rerun, a page switch or a browser reload finds its job instead of
starting a duplicate); a failed or cancelled job is replaced. `progress(fraction, message)` is the callback every
core task already takes (core.progress); it raises `Cancelled` once cancel was requested, so any task that reports
progress stops at its next report. Workers never touch the UI: the UI polls `Job` (status, progress, message,
elapsed, result, error). With `store` and `record`, the job records its runs: "running" when it starts, then
"finished" (fields from `finish(result)`), "failed" or "cancelled".

`inline=True` runs each job to the end inside `submit` (same code path, no thread): for tests of pages, where
Streamlit's AppTest cannot wait for a thread.
"""
from __future__ import annotations

import itertools
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence

from .data import DataError
from .recording import Cancelled
from .runstore import RunStore

__all__ = ["Cancelled", "CancelToken", "Job", "JobRunner"]

ACTIVE = ("queued", "running")
ENDED = ("finished", "failed", "cancelled")


class CancelToken:
    """Set by `Job.cancel()`; a task may also poll `cancelled` or call `check()` between steps."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled by the user")


@dataclass(eq=False)
class Job:
    """One submitted computation and what the UI shows of it."""

    key: Hashable
    label: str
    owner: str = ""
    kind: str = ""
    job_id: int = 0
    status: str = "queued"  # queued, running, finished, failed, cancelled
    progress: float = 0.0
    message: str = ""
    started: float = field(default_factory=time.time)
    ended: float | None = None
    result: Any = None
    error: str = ""
    run_ids: tuple[str, ...] = ()
    context: Any = field(default=None, repr=False)
    trace: str = field(default="", repr=False)  # the failure's traceback, for a log or an expander
    token: CancelToken = field(default_factory=CancelToken, repr=False)
    done_event: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def elapsed(self) -> float:
        """Seconds since the job started (until it ended, once it has)."""
        return (self.ended or time.time()) - self.started

    @property
    def done(self) -> bool:
        return self.status in ENDED

    def cancel(self) -> None:
        """Ask the job to stop: its next progress report raises Cancelled."""
        if not self.done:
            self.token.cancel()
            self.message = "cancelling…"

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends (or `timeout` seconds pass); whether it ended."""
        return self.done_event.wait(timeout)


class JobRunner:
    """Runs jobs on threads, one per key, and keeps the most recent `keep` ended jobs for the UI to find."""

    def __init__(self, inline: bool = False, keep: int = 32):
        self.inline = inline
        self.keep = keep
        self._jobs: dict[Hashable, Job] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def submit(self, key: Hashable, fn: Callable[[Callable[[float, str], None], CancelToken], Any], label: str = "",
               *, owner: str = "", kind: str = "", store: RunStore | None = None,
               record: dict | Sequence[dict] | None = None,
               finish: Callable[[Any, tuple[str, ...]], dict | Sequence[dict]] | None = None,
               context: Any = None) -> Job:
        """Start `fn(progress, cancel)` for `key`, or return the job already running or finished for it.

        `record`: start fields for `store.start` (one dict, or one per run the job produces); `finish(result,
        run_ids)`: the finish fields for each of them (one dict or a list in the same order), computed on the worker
        (it may write artifacts into the runs' folders). `context`: whatever the caller needs to use the result
        later (kept on the job, never looked at here)."""
        with self._lock:
            existing = self._jobs.get(key)
            if existing is not None and existing.status not in ("failed", "cancelled"):
                return existing
            job = Job(key, label, owner=owner, kind=kind, job_id=next(self._ids), context=context)
            self._jobs[key] = job
            self._trim()
        records = [record] if isinstance(record, dict) else list(record or [])
        if store is not None:
            job.run_ids = tuple(store.start(**spec) for spec in records)
        if self.inline:
            self._run(job, fn, store, finish)
        else:
            threading.Thread(target=self._run, args=(job, fn, store, finish), name=f"job-{job.job_id}",
                             daemon=True).start()
        return job

    def _run(self, job: Job, fn, store: RunStore | None, finish) -> None:
        def progress(fraction: float, message: str) -> None:
            job.token.check()
            job.progress, job.message = min(1.0, max(0.0, float(fraction))), message

        job.status = "running"
        try:
            job.token.check()
            result = fn(progress, job.token)
            if store is not None and job.run_ids:
                fields = finish(result, job.run_ids) if finish is not None else {}
                fields = [fields] * len(job.run_ids) if isinstance(fields, dict) else list(fields)
                for run_id, run_fields in zip(job.run_ids, fields):
                    store.finish(run_id, **run_fields)
            job.result, job.progress, job.status = result, 1.0, "finished"
            job.message = "done"
        except Cancelled:
            job.status, job.message = "cancelled", "cancelled"
            self._close_runs(job, store, "cancelled by the user", "cancelled")
        except Exception as error:  # a job must end with a status the UI can show, whatever went wrong
            refused = isinstance(error, (DataError, ValueError))  # input refused: its message says what to do
            job.status, job.error = "failed", str(error) if refused else f"{type(error).__name__}: {error}"
            job.message = job.error
            job.trace = traceback.format_exc()
            self._close_runs(job, store, job.error, "failed")
        finally:
            job.ended = time.time()
            job.done_event.set()

    @staticmethod
    def _close_runs(job: Job, store: RunStore | None, message: str, status: str) -> None:
        if store is None:
            return
        for run_id in job.run_ids:
            try:
                store.fail(run_id, message, status=status)
            except KeyError:  # the run was deleted from the history meanwhile
                pass

    def _trim(self) -> None:
        ended = [k for k, j in self._jobs.items() if j.done]
        for key in ended[: max(0, len(ended) - self.keep)]:
            del self._jobs[key]

    def get(self, key: Hashable) -> Job | None:
        with self._lock:
            return self._jobs.get(key)

    def jobs(self, owner: str | None = None, kind: str | None = None) -> list[Job]:
        """Jobs, oldest first, optionally of one owner (a browser session) and kind (a page's task)."""
        with self._lock:
            jobs = list(self._jobs.values())
        return sorted((j for j in jobs if (owner is None or j.owner == owner) and (kind is None or j.kind == kind)),
                      key=lambda j: j.job_id)

    def latest(self, owner: str, kind: str) -> Job | None:
        """The most recent job of this owner and kind (what a page shows when it opens)."""
        jobs = self.jobs(owner, kind)
        return jobs[-1] if jobs else None

    def wait_all(self, timeout: float | None = None) -> bool:
        """Wait until every job has ended; whether they all did within `timeout`."""
        deadline = None if timeout is None else time.time() + timeout
        for job in self.jobs():
            remaining = None if deadline is None else max(0.0, deadline - time.time())
            if not job.wait(remaining):
                return False
        return True

"""Background jobs in the app: one runner per server process, jobs owned by a browser tab, and the polling fragment
that shows a running job's progress bar, elapsed time and cancel button.

A tab's owner token lives in its session and in the URL (`?session=…`), so a page switch, a rerun or a browser
reload finds the tab's jobs again instead of starting duplicates, while another tab's jobs stay apart. The workers
never call Streamlit: the fragment polls the job and reruns the page once it has ended. Under tests,
PRIVACY_AUDIT_JOBS=inline runs each job to the end inside `submit` (AppTest cannot wait for a thread).
"""
from __future__ import annotations

import os
import re
import uuid
from typing import Any, Callable, Hashable

import streamlit as st

from core.jobs import Job, JobRunner

from .cache import run_store
from .state import Keys

JOBS_ENV = "PRIVACY_AUDIT_JOBS"
OWNER_PARAM = "session"
POLL_SECONDS = 0.5


@st.cache_resource(show_spinner=False)
def job_runner() -> JobRunner:
    """The process's job runner, shared by every session (each job carries its owner)."""
    return JobRunner(inline=os.environ.get(JOBS_ENV) == "inline")


def session_owner() -> str:
    """This tab's token: from its session, else from the URL (a reload), else new; kept in both."""
    token = st.session_state.get(Keys.JOB_OWNER) or st.query_params.get(OWNER_PARAM, "")
    if not re.fullmatch(r"[0-9a-f]{16}", token or ""):
        token = uuid.uuid4().hex[:16]
    st.session_state[Keys.JOB_OWNER] = token
    if st.query_params.get(OWNER_PARAM) != token:
        st.query_params[OWNER_PARAM] = token
    return token


def submit(kind: str, key: Hashable, fn: Callable, label: str, record=None, finish=None, context: Any = None) -> Job:
    """Start (or find, for the same settings) this tab's `kind` job, recording its runs in the history."""
    owner = session_owner()
    return job_runner().submit((owner, kind, key), fn, label, owner=owner, kind=kind, store=run_store(),
                               record=record, finish=finish, context=context)


def current_job(kind: str) -> Job | None:
    """This tab's most recent job of `kind` (running or ended), if any."""
    return job_runner().latest(session_owner(), kind)


def take_result(kind: str, use: Callable[[Job], None]) -> Job | None:
    """Hand this tab's finished `kind` job to `use` once per session (after a reload, once more: the new session
    takes it again); returns the job either way."""
    job = current_job(kind)
    used = st.session_state.setdefault(Keys.JOBS_USED, {})
    if job is not None and job.status == "finished" and used.get(kind) != job.job_id:
        used[kind] = job.job_id
        use(job)
    return job


@st.fragment(run_every=POLL_SECONDS)
def _poll(key: Hashable) -> None:
    job = job_runner().get(key)
    if job is None or job.done:
        st.rerun()  # the whole page, which now draws the result
    st.progress(job.progress, text=f"{job.label}: {job.message or 'starting…'}")
    left, right = st.columns([4, 1], vertical_alignment="center")
    left.caption(f"Running in the background for {job.elapsed:.0f} s. You can switch pages or reload: the job "
                 "keeps running and this page finds it again.")
    right.button("Cancel", key=f"cancel_job_{job.job_id}", on_click=job.cancel, help="Stops within seconds.")


def job_status(job: Job | None, what: str) -> None:
    """While `job` runs: its progress, elapsed time and a cancel button (polled). After: why it failed or that it
    was cancelled. Nothing once it finished (the page shows the result)."""
    if job is None:
        return
    if not job.done:
        _poll(job.key)
    elif job.status == "failed":
        st.error(f"{what} failed after {job.elapsed:.0f} s: {job.error}")
    elif job.status == "cancelled":
        st.warning(f"{what} was cancelled after {job.elapsed:.0f} s; it is recorded as cancelled in the history.")

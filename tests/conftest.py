"""Shared fixtures. MovieLens tests read ../shared/data/ml-100k (or $ML100K_DIR) and skip when it is missing,
except under CI (REQUIRE_ML100K=1), where a missing copy is a failure: CI must never skip them."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.device import get_device  # noqa: E402
from core.data import default_ml100k_dir, load_movielens_100k, make_synthetic, split_per_user  # noqa: E402

# Tests never write into the repository's run history (data/runs/), and page tests run background jobs in place:
# AppTest cannot wait for a worker thread (tests/test_jobs.py covers the threads, tests/test_browser.py the server).
os.environ.setdefault("PRIVACY_AUDIT_RUNS", os.path.join(tempfile.mkdtemp(prefix="runs-tests-"), "runs.sqlite"))
os.environ.setdefault("PRIVACY_AUDIT_JOBS", "inline")

torch.set_num_threads(min(2, torch.get_num_threads()))


def _reuse_large_buffers() -> None:
    """The tests' process only (glibc): serve buffers up to 1 GB from the heap and keep freed ones for reuse, rather
    than map and zero fresh pages for each tensor above glibc's 32 MB ceiling. The MLP attacker on 50,000 users
    allocates ~80 MB activations at each of its 150 steps: 73 s with a third in the kernel, 50 s with this. Not
    set in the product: on the million-user benchmark row it raised the peak RSS from 3.0 to 3.9-4.5 GB."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc: the allocator's defaults
        pass


if sys.platform.startswith("linux"):
    _reuse_large_buffers()

# Every device present: the CPU always, CUDA when there is one. Core tests that take the `device` fixture run once
# per device, so the GPU path is tested wherever a GPU exists; the UI tests run once.
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return get_device(request.param)


def on(model, device):
    """The model on `device` (a copy when it has to move, so session fixtures stay on the CPU)."""
    import copy

    return model if model.device == get_device(str(device)) else copy.deepcopy(model).to(device)


def _ml100k_dir() -> Path:
    folder = default_ml100k_dir()
    if folder is None:
        message = "MovieLens-100K not found: set ML100K_DIR or place it in ../shared/data/ml-100k"
        if os.environ.get("REQUIRE_ML100K"):
            pytest.fail(message)
        pytest.skip(message)
    return folder


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    return _ml100k_dir()


@pytest.fixture(scope="session")
def ml100k():
    """MovieLens-100K, all ratings as interactions, 5-core (SPEC section 1)."""
    return load_movielens_100k(_ml100k_dir())


@pytest.fixture(scope="session")
def ml100k_split(ml100k):
    return split_per_user(ml100k, seed=0)


@pytest.fixture(scope="session")
def demo():
    return make_synthetic()


@pytest.fixture(scope="session")
def demo_split(demo):
    return split_per_user(demo, seed=0)


@pytest.fixture(scope="session")
def ml100k_bpr(ml100k_split):
    """BPR-MF (d=64) trained with the default configuration on ML-100K: shared by quality, audit and unlearning tests."""
    from core.training import train_model

    return train_model("bpr", ml100k_split)


@pytest.fixture(scope="session")
def ml100k_labels(ml100k):
    from core.data import encode_attribute

    return {column: encode_attribute(ml100k.attributes[column], column) for column in ("gender", "age", "occupation")}


@pytest.fixture(scope="session")
def demo_bpr(demo_split):
    """BPR-MF on the built-in demo with a short budget: enough for its embeddings to leak every attribute."""
    from core.training import TrainConfig, train_model

    return train_model("bpr", demo_split, TrainConfig(lr=5e-3, max_epochs=15, seed=0))


@pytest.fixture(scope="session")
def demo_labels(demo):
    from core.data import encode_attribute

    return {column: encode_attribute(demo.attributes[column], column) for column in ("gender", "age", "occupation")}


APP = str(ROOT / "app.py")


def app_with_demo_model(page: str, timeout: int = 300):
    """An AppTest that trained BPR-MF on the demo for 3 epochs through the Model page, then opened `page`."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=timeout)
    at.run()
    at.switch_page("pages/model.py")
    at.run()
    at.slider(key="model_epochs").set_value(3)
    at.button(key="train_button").click()
    at.run()
    at.switch_page(page)
    at.run()
    assert not at.exception
    return at

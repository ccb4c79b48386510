"""Shared by the benchmark scripts: machine description and writing one section of bench/RESULTS.md.

Each script owns one section (between its own markers); rerunning a script replaces its section and leaves the
others alone, so RESULTS.md always holds the latest figures of every benchmark with how they were produced.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "RESULTS.md"
HEADER = "# Benchmark results\n\nEach section is written by the script it names; rerun the command to refresh it.\n"


def machine() -> str:
    """CPU model, core count and the compute device, for the results header."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU (CPU)"
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads; {device}"


def command() -> str:
    return "python " + " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])


def write_section(name: str, title: str, body: str, results_file: Path = RESULTS) -> None:
    """Replace (or append) the section `name` of RESULTS.md with a title, provenance lines and `body`."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    section = (
        f"{start}\n## {title}\n\n- date: {stamp}\n- machine: {machine()}\n- command: `{command()}`\n\n"
        f"{body.strip()}\n{end}"
    )
    text = results_file.read_text() if results_file.exists() else HEADER
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1]
        text = before + section + after
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    results_file.write_text(text)


def table(frame: pd.DataFrame, floatfmt: str = ".4f") -> str:
    """A Markdown table of a frame (printed by the scripts and written into RESULTS.md)."""
    return frame.to_markdown(index=False, floatfmt=floatfmt)

"""benchmarks/compare.py --quick: every installed method runs on two tasks and lands in the CSV."""

from __future__ import annotations

import csv
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "compare.py"
TASKS = ("plateau", "items")
HYBRIDOPT = {"hybrid", "gradient", "genetic"}
PEER_PACKAGES = {"deap": "deap", "evotorch-ga": "evotorch", "evotorch-pgpe": "evotorch",
                 "evotorch-snes": "evotorch", "pycma-sepcma": "cma"}


def _importable(package: str) -> bool:
    try:
        importlib.import_module(package)
        return True
    except ImportError:
        return False


@pytest.mark.slow
def test_compare_quick_has_a_row_per_method(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--tasks", ",".join(TASKS), "--out",
         str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=SCRIPT.parents[1],
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # A peer is skipped only when its package really is missing, and says so
    skipped = set(re.findall(r"^skipping (\S+):", proc.stdout, flags=re.M))
    for method, package in PEER_PACKAGES.items():
        assert (method in skipped) == (not _importable(package)), proc.stdout[:2000]
    expected = (HYBRIDOPT | set(PEER_PACKAGES)) - skipped

    with (tmp_path / "compare_runs.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    for task in TASKS:
        methods = [r["method"] for r in rows if r["task"] == task]
        assert sorted(methods) == sorted(expected), (task, methods)
    for row in rows:
        assert 0 < int(row["evaluations"]) <= int(row["budget"]), row
        assert int(row["validation_evaluations"]) > 0, row
        assert float(row["heldout"]) == float(row["heldout"]), row  # not NaN

    with (tmp_path / "compare_throughput.csv").open(newline="") as f:
        assert {r["task"] for r in csv.DictReader(f) if r["method"] == "hybridopt"} == set(TASKS)
    assert (tmp_path / "compare_breakdown.csv").stat().st_size > 0
    assert (tmp_path / "compare.png").stat().st_size > 0
    assert "targets:" in proc.stdout

"""What the studies in ``benchmarks/`` share: their command line and the bench's data they read."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from k2v_hub.bench.data import BenchData, Splits
from k2v_hub.features import k2v_home


def study_arguments(description: str, eval_help: str) -> argparse.Namespace:
    """``--work`` (the bench's work folder, default ``$K2V_HUB_HOME/bench-bench``), ``--eval``, ``--out``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--work", type=Path, default=None, help="The bench work folder (default: bench-bench).")
    parser.add_argument("--eval", action="store_true", help=eval_help)
    parser.add_argument("--out", type=Path, default=None, help="Write the JSON result here too.")
    args = parser.parse_args()
    args.work = args.work or k2v_home() / "bench-bench"
    return args


def bench_data(work: Path) -> tuple[BenchData, Splits]:
    """The bench's zoo, features and splits, as ``k2v-hub bench`` built them in ``work``."""
    data = BenchData(work / "zoo", work, seed=0, show_progress=False)
    return data, Splits.of(data.zoo)


def write_result(out: dict, args: argparse.Namespace, t0: float) -> None:
    """Add the seconds since ``t0``, print the result as JSON and write it to ``--out`` when given."""
    out["seconds"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(out, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)

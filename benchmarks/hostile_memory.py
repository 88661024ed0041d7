"""Peak memory of `k2v-hub index` over an org with hostile repos, next to the same org without them.

    python benchmarks/hostile_memory.py [--zoo DIR] [--out benchmarks/results/hostile-memory.json]

Without ``--zoo`` the tiny offline zoo is built first in a temporary folder (about two minutes on 2 cores). Each
index run is a fresh `k2v-hub index` subprocess; its peak resident memory is read from ``wait4``. The hostile repos
are those of ``k2v_hub.testing.hostile.HOSTILE`` (30,000 px images, 100,000 labels, configs larger than their
weights, oversized files, configs pointing elsewhere, a query that runs out of memory, a 21,843-label model).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from k2v_hub.testing.hostile import measure_peak_memory
from k2v_hub.zoo.build import build_zoo

RESULT = Path(__file__).parent / "results" / "hostile-memory.json"


def main() -> None:
    """Measure both runs and write them as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, help="A built zoo folder (default: build the tiny zoo first).")
    parser.add_argument("--out", type=Path, default=RESULT, help="Where the JSON result goes.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="k2v-hostile-") as tmp:
        zoo = args.zoo
        if zoo is None:
            zoo = Path(tmp) / "zoo"
            build_zoo(zoo, "tiny", seed=0, show_progress=False)
        result = measure_peak_memory(zoo, Path(tmp) / "work")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for kind in ("clean", "hostile"):
        run = result[kind]
        print(f"{kind:8s} {run['models']:3d} repos: indexed {len(run['indexed'])}, skipped {len(run['skipped'])}, "
              f"peak RSS {run['peak_rss_mib']} MiB, {run['seconds']} s")
    print(f"hostile - clean: {result['hostile_minus_clean_mib']} MiB -> {args.out}")


if __name__ == "__main__":
    main()

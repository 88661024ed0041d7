"""Print the README's benchmark table from a `k2v-hub bench` result.

    python benchmarks/readme_table.py [benchmarks/results/bench.json]

One row per method of the main table, in its order: access, R@1 over every evaluation task with its 95 % interval,
R@1 per setting (seen; seen with the trained models as the only candidates; unseen models), rel@1, tau_w, R@1
label-blind and seconds per search. A method the run lacks a setting for gets an empty cell.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HEADER = ("| method | access | R@1 all [95 % CI] | R@1 seen | R@1 seen, trained models only | R@1 unseen models | "
          "rel@1 | tau_w | R@1 label-blind | search s/task |")


def table(result: dict) -> str:
    """The Markdown table of ``result`` (a parsed ``bench.json``)."""
    settings, blind = result["settings"], result.get("label_blind", {}).get("methods", {})
    lines = [HEADER, "|" + "---|" * HEADER.count(" | ") + "---|"]
    for name, row in result["methods"].items():
        low, high = row["ci95"]["r@1"]
        cells = [name, row.get("access", ""), f"{row['r@1']} [{low}, {high}]",
                 *(settings.get(s, {}).get(name, {}).get("r@1", "") for s in ("seen", "seen_pool", "inductive")),
                 row["rel@1"], row["tau_w"], blind.get(name, {}).get("r@1", ""), row["search_s"]]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(json.loads(Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/bench.json").read_text())))

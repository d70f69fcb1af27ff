# How much the quickstart's table moves with the seed: runs scripts/quickstart.py once per seed (init weights and
# data order change; the held-out sets do not) and prints each figure's seed-0 value and its range over the seeds,
# in the README table's format. Resumable: a seed whose RUN/seedN/table.json exists is not run again.
# About 5.5 minutes per seed on 2 CPU cores; figures are in the README.
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_seed(out: Path, seed: int, nproc: int) -> dict:
    table = out / f"seed{seed}" / "table.json"
    if not table.is_file():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "quickstart.py"), str(table.parent), str(nproc),
                        str(seed)], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return json.loads(table.read_text())["scores"]


def summarise(by_seed: dict[int, dict]) -> list[str]:
    """README rows: `| task | 0.40 (0.19-0.79) | ...` with the first seed's figure and the min-max over seeds."""
    first = by_seed[min(by_seed)]
    rows = []
    for task in first["init"]:
        cells = []
        for stage in first:
            values = [scores[stage][task] for scores in by_seed.values()]
            cells.append(f"{first[stage][task]:.2f} ({min(values):.2f}–{max(values):.2f})")
        rows.append(f"| {task} | " + " | ".join(cells) + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "seeds")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--nproc", type=int, default=2)
    args = parser.parse_args()
    by_seed = {}
    for seed in args.seeds:
        by_seed[seed] = run_seed(args.out, seed, args.nproc)
        print(f"seed {seed}: " + json.dumps(by_seed[seed]), flush=True)
    print(f"| task | {' | '.join(by_seed[min(by_seed)])} |")
    print("\n".join(summarise(by_seed)))


if __name__ == "__main__":
    main()

# Start-up time of `smolvlm --help` and `smolvlm init --help` (target: under 0.5 s).
# Also checks that no heavy framework is imported just to print help.
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

EXE = Path(sys.executable).with_name("smolvlm")
HEAVY = ("torch", "transformers", "deepspeed", "datasets", "peft")


def timed(args: list[str], repeats: int = 7) -> float:
    subprocess.run([str(EXE), *args], capture_output=True, check=True)  # warm the page cache
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([str(EXE), *args], capture_output=True, check=True)
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def heavy_imports() -> list[str]:
    code = ("import sys; from smolvlm_cli.cli import app; "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return [m for m in out.strip().split(",") if m]


if __name__ == "__main__":
    for args in (["--help"], ["init", "--help"]):
        print(f"smolvlm {' '.join(args):<14} median {timed(args) * 1000:6.0f} ms")
    print(f"heavy modules imported by the CLI module: {heavy_imports() or 'none'}")

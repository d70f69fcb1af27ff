# The quickstart: the tiny recipe end to end on built-in data (init, eval, train-vision, train-video, eval, export,
# report), then a table of held-out accuracy before and after training. `make quickstart` runs it (`SEED=N`: a seed).
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

RUN = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/quickstart")
NPROC = sys.argv[2] if len(sys.argv) > 2 else "2"
SEED = sys.argv[3] if len(sys.argv) > 3 else "0"
RECIPE = "recipes/tiny.yaml"
TASKS = ",".join(f"synthetic_{t}" for t in ("colour", "colour_sequence", "direction", "count", "position", "text"))
console = Console()


def reproducible_env() -> dict[str, str]:
    """The same table on every machine: CPU only, one thread per process in every library (a reduction split
    over N threads adds in another order), no hash randomisation, and on x86-64 the AVX2 kernels of torch, MKL and
    oneDNN (an AVX-512 machine would otherwise take other code paths, with other rounding)."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONHASHSEED="0")
    if platform.machine().lower() in ("x86_64", "amd64"):
        env.update(ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2", MKL_CBWR="COMPATIBLE")
    return env


def smolvlm(*args) -> None:
    console.rule(f"smolvlm {' '.join(map(str, args))}")
    code = subprocess.call([sys.executable, "-m", "smolvlm_cli.cli", *map(str, args)], env=reproducible_env())
    if code:
        sys.exit(code)


def evaluate(model: Path, name: str) -> dict:
    out = RUN / "eval" / f"{name}.json"
    smolvlm("eval", "--model", model, "--tasks", TASKS, "--out", out)
    return {t: r["score"] for t, r in json.loads(out.read_text())["tasks"].items()}


def main() -> None:
    start = time.time()
    shutil.rmtree(RUN, ignore_errors=True)
    seed = ("--set", f"seed={SEED}")
    smolvlm("init", "--recipe", RECIPE, "--out", RUN / "init", *seed)
    scores = {"init": evaluate(RUN / "init", "init")}
    smolvlm("train-vision", "--recipe", RECIPE, "--init", RUN / "init", "--out", RUN / "vision", "--nproc", NPROC, *seed)
    scores["vision stage"] = evaluate(RUN / "vision", "vision")
    smolvlm("train-video", "--recipe", RECIPE, "--init", RUN / "vision", "--out", RUN / "video", "--nproc", NPROC,
            *seed)
    scores["video stage"] = evaluate(RUN / "video", "video")
    smolvlm("export", RUN / "video", "--out", RUN / "export", "--dtype", "float32")
    smolvlm("report", RUN / "video", "--out", RUN / "report")  # the video run brings the vision run it continues

    (RUN / "table.json").write_text(json.dumps({"seed": int(SEED), "scores": scores}, indent=1))
    table = Table(title="held-out accuracy (synthetic test splits)", title_justify="left")
    table.add_column("task")
    for name in scores:
        table.add_column(name, justify="right")
    for task in scores["init"]:
        table.add_row(task, *(f"{scores[n][task]:.2f}" for n in scores))
    console.print(table)
    console.print(f"exported model: [bold]{RUN / 'export'}[/]   total time {time.time() - start:.0f} s")
    console.print(f"training report: [bold]{RUN / 'report' / 'report.html'}[/] (plots of both stages)")


if __name__ == "__main__":
    main()

# The quickstart: the tiny recipe end to end on built-in data (init, eval, train-vision, train-video, eval, export),
# then a table of held-out accuracy before and after training. Run by `make quickstart`.
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

RUN = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/quickstart")
NPROC = sys.argv[2] if len(sys.argv) > 2 else "2"
RECIPE = "recipes/tiny.yaml"
TASKS = ",".join(f"synthetic_{t}" for t in ("colour", "colour_sequence", "direction", "count", "position", "text"))
console = Console()


def smolvlm(*args) -> None:
    console.rule(f"smolvlm {' '.join(map(str, args))}")
    code = subprocess.call([sys.executable, "-m", "smolvlm_cli.cli", *map(str, args)])
    if code:
        sys.exit(code)


def evaluate(model: Path, name: str) -> dict:
    out = RUN / "eval" / f"{name}.json"
    smolvlm("eval", "--model", model, "--tasks", TASKS, "--out", out)
    return {t: r["score"] for t, r in json.loads(out.read_text())["tasks"].items()}


def main() -> None:
    start = time.time()
    shutil.rmtree(RUN, ignore_errors=True)
    smolvlm("init", "--recipe", RECIPE, "--out", RUN / "init")
    scores = {"init": evaluate(RUN / "init", "init")}
    smolvlm("train-vision", "--recipe", RECIPE, "--init", RUN / "init", "--out", RUN / "vision", "--nproc", NPROC)
    scores["vision stage"] = evaluate(RUN / "vision", "vision")
    smolvlm("train-video", "--recipe", RECIPE, "--init", RUN / "vision", "--out", RUN / "video", "--nproc", NPROC)
    scores["video stage"] = evaluate(RUN / "video", "video")
    smolvlm("export", RUN / "video", "--out", RUN / "export", "--dtype", "float32")

    table = Table(title="held-out accuracy (synthetic test splits)", title_justify="left")
    table.add_column("task")
    for name in scores:
        table.add_column(name, justify="right")
    for task in scores["init"]:
        table.add_row(task, *(f"{scores[n][task]:.2f}" for n in scores))
    console.print(table)
    console.print(f"exported model: [bold]{RUN / 'export'}[/]   total time {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()

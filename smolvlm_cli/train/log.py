# What a run reports: rank 0 alone prints (start-up table, Rich progress) and writes RUN/metrics.jsonl
# (and TensorBoard when asked); other ranks stay silent.
from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table


class RunLog:
    def __init__(self, run: Path, main: bool, tensorboard: bool = False, console: Console | None = None):
        self.main = main
        self.console = console or Console(stderr=True)
        self.metrics = Path(run) / "metrics.jsonl"
        self.writer = None
        if main and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                from ..errors import RecipeError

                raise RecipeError("train.tensorboard is on but tensorboard is not installed",
                                  "pip install 'smolvlm-cli[tensorboard]', or set train.tensorboard=false") from None
            self.writer = SummaryWriter(str(Path(run) / "tensorboard"))

    def info(self, text: str) -> None:
        if self.main:
            self.console.print(text, highlight=False)

    def phase_table(self, job, engine, group_names, gas) -> None:
        if not self.main:
            return
        from .phases import trainable_summary

        phase = job.phase
        table = Table(title=f"{job.stage} stage, phase {job.index + 1}: {phase.name}", title_justify="left")
        for col in ("part", "mode", "trainable", "total", "lr"):
            table.add_column(col, justify="right" if col in ("trainable", "total") else "left")
        for row in trainable_summary(engine.module, phase):
            table.add_row(row["part"], row["mode"], f"{row['trainable']:,}", f"{row['total']:,}",
                          "" if row["lr"] is None else f"{row['lr']:g}")
        self.console.print(table)
        self.console.print(
            f"steps {phase.steps} | global batch {phase.global_batch_size} = micro {phase.micro_batch_size} x "
            f"accumulation {gas} x {job.dist.world_size} processes | max_seq_len {phase.max_seq_len} | "
            f"packing {phase.packing} | NEFTune {phase.neftune_alpha or 'off'}", highlight=False)

    def progress(self, job, start_step: int):
        if not self.main:
            return None
        progress = Progress(TextColumn("[bold]{task.fields[phase]}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[tps]} tok/s"),
                            TimeRemainingColumn(), console=self.console, transient=False)
        progress.start()
        self._task = progress.add_task("train", total=job.phase.steps, completed=start_step, phase=job.phase.name,
                                       loss="-", lr="-", tps="-")
        return progress

    def step(self, job, step, loss, lrs, tokens_per_s, stream, bad_steps, progress, memory=None,
             data_wait=None) -> None:
        if not self.main:
            return
        record = {"time": round(time.time(), 3), "stage": job.stage, "phase": job.phase.name, "step": step,
                  "loss": loss, "lr": lrs, "tokens_per_s": round(tokens_per_s, 1), "samples_seen": stream.seen,
                  "skipped": dict(stream.skipped), "fitted": dict(stream.fitted), "bad_steps": bad_steps,
                  "peak_rss_mb": memory, "data_wait": data_wait}
        if step % job.recipe.train.log_every == 0 or step == job.phase.steps:
            with self.metrics.open("a") as f:
                f.write(json.dumps(record) + "\n")
            if self.writer is not None:
                tag = f"{job.stage}/{job.phase.name}"
                if loss is not None:
                    self.writer.add_scalar(f"{tag}/loss", loss, step)
                for name, lr in lrs.items():
                    self.writer.add_scalar(f"{tag}/lr/{name}", lr, step)
                self.writer.add_scalar(f"{tag}/tokens_per_s", tokens_per_s, step)
                if data_wait is not None:
                    self.writer.add_scalar(f"{tag}/data_wait", data_wait, step)
        if progress is not None:
            lr = next(iter(lrs.values())) if lrs else 0.0
            progress.update(self._task, completed=step, loss="nan" if loss is None else f"{loss:.4f}",
                            lr=f"{lr:.2e}", tps=f"{tokens_per_s:,.0f}")

    def eval(self, record: dict) -> None:
        if self.main:
            with self.metrics.open("a") as f:
                f.write(json.dumps(record) + "\n")

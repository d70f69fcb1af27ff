# What a run reports: rank 0 alone prints (start-up table, Rich progress) and writes RUN/metrics.jsonl, and hands the
# same scalars to the loggers train.report_to names (TensorBoard, W&B); other ranks stay silent.
from __future__ import annotations

import atexit
import json
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..errors import RecipeError

_NOT_SCALARS = ("time", "stage", "phase", "step")


def scalars(record: dict, prefix: str = "") -> dict[str, float]:
    """The numbers of a metrics.jsonl record, flattened: {"lr/text": .., "peak_rss_mb/rank1": .., "eval/X": ..}."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if not prefix and key in _NOT_SCALARS:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, (int, float)):
            out[name] = float(value)
        elif isinstance(value, dict):
            out.update(scalars(value, name + "/"))
        elif isinstance(value, list):
            out.update(scalars({f"rank{i}": v for i, v in enumerate(value)}, name + "/"))
    return out


def drawn_per_source(stream) -> dict[str, int]:
    """Samples the phase's mixture has drawn from each source so far, over all ranks: every data shard's mixture
    walks the global draw sequence, so the first shard's cursor counts them all (reading ahead by a window)."""
    shards = getattr(stream, "shards", None)
    if not shards:
        return {}
    state = shards[min(shards)].mixture.state_dict()
    return {s["name"]: s["consumed"] for s in state["sources"]}


class _TensorBoard:
    def __init__(self, run: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise RecipeError("train.report_to has tensorboard but tensorboard is not installed",
                              "pip install 'smolvlm-cli[tensorboard]', or drop it from train.report_to") from None
        self.writer = SummaryWriter(str(run / "tensorboard"), flush_secs=10)

    def log(self, record: dict) -> None:
        tag = f"{record['stage']}/{record['phase']}"
        for name, value in scalars(record).items():
            self.writer.add_scalar(f"{tag}/{name}", value, record["step"])

    def close(self) -> None:
        self.writer.close()


class _WandB:
    """One W&B run per RUN folder (its files under RUN/wandb); WANDB_MODE=offline keeps it on disk for `wandb sync`."""

    def __init__(self, run: Path):
        import os

        try:
            import wandb
        except ImportError:
            raise RecipeError("train.report_to has wandb but wandb is not installed",
                              "pip install 'smolvlm-cli[wandb]', or drop it from train.report_to") from None
        import yaml

        recipe = run / "recipe.yaml"
        config = yaml.safe_load(recipe.read_text()) if recipe.is_file() else {}
        try:
            self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "smolvlm"), name=run.name, dir=str(run),
                                  config=config, reinit="create_new")
        except Exception as e:  # not logged in, no network: one line, not wandb's traceback
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise RecipeError(f"W&B could not start ({reason})", "run `wandb login`, or set WANDB_MODE=offline "
                              "(then `wandb sync RUN/wandb/...`)") from None

    def log(self, record: dict) -> None:
        self.run.log({f"{record['stage']}/{record['phase']}/{k}": v for k, v in scalars(record).items()}
                     | {"step": record["step"]})

    def close(self) -> None:
        self.run.finish()


LOGGERS = {"tensorboard": _TensorBoard, "wandb": _WandB}


class RunLog:
    def __init__(self, run: Path, main: bool, report_to=(), console: Console | None = None):
        self.main = main
        self.console = console or Console(stderr=True)
        self.metrics = Path(run) / "metrics.jsonl"
        self.loggers = [LOGGERS[name](Path(run)) for name in report_to] if main else []
        if self.loggers:
            atexit.register(self.close)

    def close(self) -> None:
        """Flush and close the loggers (also at exit)."""
        loggers, self.loggers = self.loggers, []
        for logger in loggers:
            logger.close()

    def _write(self, record: dict) -> None:
        with self.metrics.open("a") as f:
            f.write(json.dumps(record) + "\n")
        for logger in self.loggers:
            logger.log(record)

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
                  "peak_rss_mb": memory, "data_wait": data_wait, "sources": drawn_per_source(stream)}
        if step % job.recipe.train.log_every == 0 or step == job.phase.steps:
            self._write(record)
        if progress is not None:
            lr = next(iter(lrs.values())) if lrs else 0.0
            progress.update(self._task, completed=step, loss="nan" if loss is None else f"{loss:.4f}",
                            lr=f"{lr:.2e}", tps=f"{tokens_per_s:,.0f}")

    def eval(self, record: dict) -> None:
        if self.main:
            self._write(record)

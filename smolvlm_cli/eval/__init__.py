# Evaluation: benchmark scorers (metrics), the task registry (tasks*) and the generation runner (runner).
# Importing this package is cheap: torch and transformers load only when a run starts.
from __future__ import annotations

from .tasks import composite, composite_weights, resolve_tasks

__all__ = ["composite", "composite_weights", "resolve_tasks", "run_eval", "evaluate", "cli_eval"]


def __getattr__(name: str):
    if name in ("run_eval", "evaluate", "cli_eval"):
        from . import runner

        return getattr(runner, name)
    raise AttributeError(name)

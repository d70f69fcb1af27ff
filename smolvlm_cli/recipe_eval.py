# The recipe's periodic-eval section, checked against the task registry when the recipe loads.
from __future__ import annotations

from pydantic import Field, model_validator

from .recipe_base import Strict

class EvalSettings(Strict):
    every_steps: int = Field(gt=0)
    tasks: list[str] = Field(min_length=1)
    limit: int | None = Field(default=None, gt=0)
    batch_size: int = Field(default=8, gt=0)
    keep_best: int = Field(default=2, gt=0)
    weights: dict[str, float] | None = Field(
        default=None, description="composite weight per task (tasks not named weigh 0); default: the paper's "
                                  "checkpoint-selection benchmarks among the tasks, else all equally")
    dataset_paths: dict[str, str] = Field(
        default_factory=dict, description="task -> local dataset, as `smolvlm eval --dataset-path`; default: the "
                                          "hub, and the recipe's synthetic set for the synthetic tasks")
    media_roots: dict[str, str] = Field(
        default_factory=dict, description="video task -> folder of its videos, as `smolvlm eval --media-root`")
    prompt_style: str = Field(default="lmms", description="lmms | vlmevalkit, as `smolvlm eval --prompt-style`")

    @model_validator(mode="after")
    def _weights_score_run_tasks(self) -> "EvalSettings":
        """The composite ranks the checkpoints of periodic eval: checked here, a bad task name or weight is a recipe
        error at load time instead of a crash (or an ignored weight) at the first eval, hours into training."""
        from .errors import UserError
        from .eval.tasks import PROMPT_STYLES, resolve_tasks

        try:
            run = resolve_tasks(self.tasks)
        except UserError as e:
            raise ValueError(f"eval.tasks: {e.message} ({e.hint})") from None
        if self.prompt_style not in PROMPT_STYLES:
            raise ValueError(f"eval.prompt_style {self.prompt_style!r} is not one of {', '.join(PROMPT_STYLES)}")
        _check_task_paths(self, run)
        if self.weights is None:
            return self
        stray = [k for k in self.weights if k not in run]
        if stray:
            raise ValueError(f"eval.weights names {', '.join(map(repr, stray))}, not among the tasks eval.tasks runs "
                             f"({', '.join(run)})")
        negative = [k for k, w in self.weights.items() if w < 0]
        if negative:
            raise ValueError(f"eval.weights gives {', '.join(map(repr, negative))} a negative weight")
        if not any(w > 0 for w in self.weights.values()):
            raise ValueError("eval.weights gives no task a positive weight, so no checkpoint could be ranked")
        return self


def _check_task_paths(settings: EvalSettings, run: list[str]) -> None:
    """dataset_paths / media_roots keys name tasks eval.tasks runs; every video task run has its media folder."""
    from .errors import UserError
    from .eval.tasks import registry, tasks_named

    def named(key: str) -> list[str]:
        try:
            return tasks_named(key, run)
        except UserError:  # an unknown name is reported as a stray key, like a weight's
            return []

    for field in ("dataset_paths", "media_roots"):
        stray = [k for k in getattr(settings, field) if not named(k)]
        if stray:
            raise ValueError(f"eval.{field} names {', '.join(map(repr, stray))}, not among the tasks eval.tasks "
                             f"runs ({', '.join(run)})")
    with_media = {n for k in settings.media_roots for n in named(k)}
    missing = [n for n in run if registry()[n].needs_media_root and n not in with_media]
    if missing:
        raise ValueError(f"eval.tasks runs the video task(s) {', '.join(map(repr, missing))} but eval.media_roots "
                         "gives no folder of their videos")

# The recipe's periodic-eval section, checked against the task registry when the recipe loads, and `--eval-data`
# folded into it.
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from .recipe_base import Strict

USER_TASK = "eval_data"  # the name the held-out rows of eval.data score under (metrics.jsonl, weights, best.json)


class EvalSettings(Strict):
    every_steps: int | None = Field(default=None, gt=0, description="default: train.checkpoint_every")
    tasks: list[str] = Field(default_factory=list, description="benchmark tasks or groups, as `smolvlm eval "
                             "--tasks`; may be empty when `data` is given")
    data: list[str] = Field(default_factory=list, description="held-out files (JSONL, CSV, image folder with "
                            "metadata.jsonl / .csv, as --data) scored as task eval_data, prompted as training does")
    data_metric: Literal["exact_match", "anls"] = Field(
        default="exact_match", description="eval_data's score: normalised exact match or ANLS (DocVQA's)")
    data_max_new_tokens: int = Field(default=64, gt=0, description="longest answer generated for eval_data")
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

        if not self.tasks and not self.data:
            raise ValueError("eval gives neither tasks nor data to score, so no checkpoint could be ranked")
        try:
            run = resolve_tasks(self.tasks) if self.tasks else []
        except UserError as e:
            raise ValueError(f"eval.tasks: {e.message} ({e.hint})") from None
        if self.prompt_style not in PROMPT_STYLES:
            raise ValueError(f"eval.prompt_style {self.prompt_style!r} is not one of {', '.join(PROMPT_STYLES)}")
        _check_task_paths(self, run)
        if self.weights is None:
            return self
        scored = [*run, USER_TASK] if self.data else run
        stray = [k for k in self.weights if k not in scored]
        if stray:
            raise ValueError(f"eval.weights names {', '.join(map(repr, stray))}, not among the tasks eval.tasks runs "
                             f"({', '.join(scored)})")
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


def eval_data_overrides(paths: list) -> list[str]:
    """`--eval-data PATH` (repeatable) as a `--set` override replacing eval.data. A recipe without an eval section
    gets one: the held-out rows alone, scored every train.checkpoint_every steps, the 2 best models kept."""
    import json

    from .errors import UserError

    full = []
    for path in paths:
        if not Path(path).expanduser().exists():
            raise UserError(f"--eval-data '{path}' not found", "pass a JSONL or CSV file, or an image folder with "
                            "metadata.jsonl / metadata.csv")
        full.append(str(Path(path).expanduser().absolute()))
    return [f"eval.data={json.dumps(full)}"]

# The recipe's training schema: phases, how each part trains, adapters, schedules, data mixtures, train settings.
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .recipe_base import Strict

PART_NAMES = ("vision", "connector", "text", "embeddings")


class PartTraining(Strict):
    """How one part trains in a phase. `embeddings` = the LM's input embeddings (incl. new token rows) + lm_head."""

    mode: Literal["frozen", "dora", "lora", "qlora", "full"] = Field(
        default="frozen", description="qlora: LoRA adapters over the part's Linear layers loaded as 4-bit NF4 "
                                      "(bitsandbytes); vision and text only")
    lr: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _lr_when_trained(self) -> "PartTraining":
        if self.mode != "frozen" and self.lr is None:
            raise ValueError(f"a part in mode '{self.mode}' needs an lr")
        return self


class AdapterSettings(Strict):
    r: int = Field(default=64, gt=0)
    alpha: float = Field(default=16, gt=0)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    target_modules: list[str] | None = Field(
        default=None, description="module names to adapt inside the adapted parts, e.g. [q_proj, v_proj]; "
                                  "default: every attention and MLP projection (and lm_head)")


class Schedule(Strict):
    type: Literal["linear", "cosine", "constant"] = "linear"
    warmup_steps: int | None = Field(default=None, ge=0)
    warmup_ratio: float | None = Field(default=None, ge=0, le=1)


class MixtureEntry(Strict):
    source: str
    weight: float = Field(ge=0, description="percent of the phase's samples")
    max_samples: int | None = Field(default=None, gt=0)
    max_epochs: float | None = Field(default=None, gt=0, description="cap on passes over the source")


class Phase(Strict):
    name: str
    steps: int | None = Field(default=None, gt=0, description="optimizer steps; wins over epochs when both are set")
    epochs: float | None = Field(default=None, gt=0, description="passes over the phase's sources' rows")
    global_batch_size: int = Field(gt=0, description="samples per optimizer step over all ranks")
    micro_batch_size: int = Field(default=1, gt=0)
    max_seq_len: int = Field(default=2048, gt=0)
    packing: bool = False
    group_by_length: bool = True
    neftune_alpha: float | None = Field(default=None, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = Field(default=1.0, gt=0)
    schedule: Schedule = Field(default_factory=Schedule)
    parts: dict[Literal["vision", "connector", "text", "embeddings"], PartTraining]
    adapter: AdapterSettings = Field(default_factory=AdapterSettings)
    data: list[MixtureEntry] = Field(min_length=1)
    video_fps: float | None = Field(default=None, gt=0, description="default: the model's processor's, as eval")
    video_max_frames: int | None = Field(default=None, gt=0, description="default: the model's processor's")
    gradient_checkpointing: bool = False

    @model_validator(mode="after")
    def _length_given(self) -> "Phase":
        if self.steps is None and self.epochs is None:
            raise ValueError(f"phase '{self.name}' needs steps or epochs")
        return self

    @model_validator(mode="after")
    def _qlora_fits(self) -> "Phase":
        modes = {name: p.mode for name, p in self.parts.items()}
        wrong = [name for name, mode in modes.items() if mode == "qlora" and name not in ("vision", "text")]
        if wrong:
            raise ValueError(f"phase '{self.name}': part {wrong[0]} cannot be qlora (only vision and text are "
                             "quantized); use lora or full")
        if "qlora" in modes.values() and "dora" in modes.values():
            raise ValueError(f"phase '{self.name}' mixes qlora and dora parts; use lora (or qlora) beside qlora")
        return self

    @model_validator(mode="after")
    def _something_trains(self) -> "Phase":
        if all(p.mode == "frozen" for p in self.parts.values()):
            raise ValueError(f"phase '{self.name}' trains nothing: every part is frozen")
        return self


class Stage(Strict):
    phases: list[Phase] = Field(min_length=1)


class TrainSettings(Strict):
    deepspeed: str = Field(default="zero3", description="zero0 (ZeRO off) | zero2 | zero3 | zero3_offload | path to "
                                                        "a JSON config")
    zero3_persistence_threshold: int | None = Field(
        default=None, ge=0, description="ZeRO-3: parameters with at most this many elements stay whole on every "
        "rank (0 partitions all); default max(10 x text hidden size, 100000)")
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    optimizer: Literal["adamw", "adamw_8bit", "paged_adamw_8bit"] = Field(
        default="adamw", description="adamw (torch / DeepSpeed), or bitsandbytes' 8-bit AdamW, paged or not")
    log_every: int = Field(default=1, gt=0)
    checkpoint_every: int = Field(default=500, gt=0)
    keep_last: int = Field(default=2, gt=0)
    max_bad_steps: int = Field(default=3, gt=0, description="consecutive non-finite losses before stopping")
    max_skip_fraction: float = Field(default=0.01, ge=0, le=1, description="stop if more samples are unusable")
    num_workers: int = Field(default=0, ge=0)
    video_backend: Literal["auto", "decord", "pyav"] = "auto"
    group_window: int = Field(default=16, gt=0, description="micro-batches per length-grouping window")
    report_to: list[Literal["tensorboard", "wandb"]] = Field(
        default_factory=list, description="loggers that get metrics.jsonl's scalars from rank 0: tensorboard "
        "(RUN/tensorboard), wandb (offline when WANDB_MODE=offline)")
    deterministic: bool = Field(default=False, description="torch's deterministic kernels (slower on GPU): the same "
                                "run on the same hardware and versions gives the same weights")

    @model_validator(mode="before")
    @classmethod
    def _loggers(cls, data):
        """report_to may be one name; the older `tensorboard: true` still reads, as report_to: [tensorboard]."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        wanted = data.get("report_to") or []
        wanted = [wanted] if isinstance(wanted, str) else list(wanted)
        if data.pop("tensorboard", False) and "tensorboard" not in wanted:
            wanted.append("tensorboard")
        if "report_to" in data or wanted:
            data["report_to"] = list(dict.fromkeys(wanted))
        return data

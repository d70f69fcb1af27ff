# One training phase on a DeepSpeed engine: build (under zero.Init for ZeRO-3), apply the phase, run the loop with
# a token-weighted loss over the global batch, log, checkpoint, resume, and write the merged model at the end.
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..assemble import image_seq_len
from ..data.batching import add_blank_image
from . import checkpoint as ckpt
from . import quantize  # before transformers: quiets bitsandbytes, which peft imports
from .launch import Dist, barrier
from .loss import supervised_loss_sum


DATA_WAIT_WARN = 0.05  # share of step time spent waiting for data above which the trainer warns


class TrainingStopped(UserError):
    """Training cannot go on (non-finite losses, data exhausted)."""


@dataclass
class PhaseJob:
    recipe: object
    stage: str
    index: int
    phase: object
    start_dir: Path
    run: Path
    dist: Dist
    out_dir: Path
    ds_config: str = "zero3"
    log: object = None  # RunLog
    evaluator: object = None  # train.evaluate.Evaluator: called (engine, job, step) every `evaluator.every` steps
    pad_id: int = 0


def _all_sum(values: list[float]) -> list[float]:
    import torch

    t = torch.tensor(values, dtype=torch.float64, device=ckpt.comm_device())
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(t)
    return t.tolist()


def _peak_rss_mb() -> list[float]:
    """Peak memory of every rank, in MiB: GPU memory allocated on GPU, resident memory on CPU."""
    import resource

    import torch

    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    mine = torch.tensor([peak], dtype=torch.float64, device=ckpt.comm_device())
    if not torch.distributed.is_initialized():
        return mine.tolist()
    everyone = [torch.zeros_like(mine) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(everyone, mine)
    return [round(float(t), 1) for t in everyone]


def attention_implementation(bf16: bool) -> str:
    """flash-attention 2 on a bf16 GPU when the package is installed, else PyTorch's sdpa."""
    import importlib.util

    import torch

    if bf16 and torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def fit_to_attention(batch: dict, implementation: str, dtype) -> dict:
    """Packed batches carry a 4D float mask (sdpa / eager); flash-attention instead separates packed samples by the
    restarting position_ids, and a float mask must match the model's dtype."""
    mask = batch.get("attention_mask")
    if mask is None or mask.dim() != 4:
        return batch
    batch = dict(batch)
    batch["attention_mask"] = None if implementation == "flash_attention_2" else mask.to(dtype)
    return batch


def make_reproducible(seed: int, deterministic: bool) -> None:
    """Seed every RNG a step draws from (adapter init, dropout, NEFTune noise; torch.manual_seed covers CUDA) and,
    when asked, use torch's deterministic kernels where it has them (cuBLAS needs a fixed workspace for that)."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:  # before the first cuBLAS call, which reads it
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(deterministic, warn_only=True)  # set both ways: a process may train twice


def build_engine(job: PhaseJob, universal: bool = False):
    import deepspeed
    import torch
    from transformers import AutoModelForImageTextToText, get_scheduler
    from transformers.integrations.deepspeed import HfDeepSpeedConfig

    from .dsconfig import fill, gradient_accumulation, load_ds_config, offloads_optimizer, use_bf16
    from .phases import apply_phase, param_groups

    phase, dist = job.phase, job.dist
    gas = gradient_accumulation(phase.global_batch_size, phase.micro_batch_size, dist.world_size)
    bf16 = use_bf16(job.recipe.train.precision)
    raw = load_ds_config(job.ds_config)
    config = json.loads((Path(job.start_dir) / "config.json").read_text())
    ds = fill(raw, micro_batch=phase.micro_batch_size, grad_accum=gas, world_size=dist.world_size,
              grad_clip=phase.grad_clip, bf16=bf16, hidden_size=config["text_config"]["hidden_size"],
              persistence_threshold=job.recipe.train.zero3_persistence_threshold)
    if universal:  # the checkpoint it resumes from was written by another number of processes
        ds["checkpoint"] = {"load_universal": True}
    quantize.check(ds, job.recipe.train.optimizer, phase)
    zero3 = ds.get("zero_optimization", {}).get("stage", 0) == 3
    hf_ds = HfDeepSpeedConfig(ds) if zero3 else None  # makes from_pretrained build under zero.Init
    make_reproducible(job.recipe.seed, job.recipe.train.deterministic)
    quant = quantize.quantization_config(phase, bf16)  # qlora parts load as 4-bit NF4
    model = AutoModelForImageTextToText.from_pretrained(job.start_dir, dtype=torch.float32,
                                                        attn_implementation=attention_implementation(bf16),
                                                        quantization_config=quant,
                                                        device_map=quantize.device_map(dist) if quant else None)
    model = quantize.prepare(model, phase)
    if phase.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = apply_phase(model, phase)
    if zero3:
        _gather_dora_base_weights(model)
    if phase.neftune_alpha:
        from transformers.integrations.neftune import neftune_post_forward_hook

        embed = model.get_input_embeddings()
        embed.neftune_noise_alpha = phase.neftune_alpha
        embed.register_forward_hook(neftune_post_forward_hook)
    groups = param_groups(model, phase)
    optimizer = _optimizer(groups, phase, offloads_optimizer(ds), job.recipe.train.optimizer)
    s = phase.schedule
    warmup = s.warmup_steps if s.warmup_steps is not None else int((s.warmup_ratio or 0) * phase.steps)
    name = {"constant": "constant_with_warmup"}.get(s.type, s.type)
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=phase.steps)
    engine, optimizer, _, scheduler = deepspeed.initialize(model=model, optimizer=optimizer,
                                                           lr_scheduler=scheduler, config=ds)
    engine._smolvlm_hf_ds = hf_ds  # keep the zero.Init switch alive as long as the engine
    return engine, gas, [g["name"] for g in groups]


def _optimizer(groups: list[dict], phase, offload: bool, name: str = "adamw"):
    """AdamW over the per-part groups (bitsandbytes' 8-bit AdamW for train.optimizer adamw_8bit / paged_adamw_8bit).
    ZeRO-Offload refuses any client optimizer but DeepSpeed's CPU Adam, so there the same groups (learning rates,
    weight-decay split) go to that in AdamW mode; the group lrs override its `lr`."""
    import torch

    if name != "adamw":  # quantize.check has refused it under offload
        from .quantize import optimizer_8bit

        return optimizer_8bit(groups, name, phase.betas)
    if not offload:
        return torch.optim.AdamW(groups, betas=phase.betas, eps=1e-8, foreach=False)
    from deepspeed.ops.adam import DeepSpeedCPUAdam

    return DeepSpeedCPUAdam(groups, betas=phase.betas, eps=1e-8, adamw_mode=True)


def _gather_dora_base_weights(model) -> None:
    """DoRA reads its base layer's full weight (for the column norm) outside the base layer's own forward; under
    ZeRO-3 that weight is partitioned there. Registering it as an external parameter of the DoRA module makes
    DeepSpeed gather it for the whole module's forward."""
    import deepspeed

    register_external_parameter = deepspeed.zero.register_external_parameter

    for module in model.modules():
        if getattr(module, "lora_magnitude_vector", None) and hasattr(module, "base_layer"):
            register_external_parameter(module, module.base_layer.weight)


def _inner(module):
    for m in module.modules():
        if type(m).__name__ == "SmolVLMModel":
            return m
    raise RuntimeError("no SmolVLMModel inside the engine")


def run_phase(job: PhaseJob, shard_stream) -> Path:
    """Train one phase to its last step and return the folder of its merged model. Every stop inside the loop (data
    out or unusable, non-finite losses, a full disk, a scheduler's signal) is agreed by all ranks at a step
    boundary, so that they stop together with one message. `shard_stream(shard, shards, state)` opens one shard of
    the phase's data (train.shards)."""
    from .shards import RankStream

    resume = _resume_point(job)
    engine, gas, group_names = build_engine(job, universal=resume is not None and resume.resharded)
    start_step, states, bad_total, shards = _resume(engine, job, resume)
    phase, dist = job.phase, job.dist
    stream = RankStream(shard_stream, shards, dist.rank, dist.world_size,
                        phase.global_batch_size // phase.micro_batch_size, states)
    assert stream.micro_batches == gas
    engine.train()  # from_pretrained leaves the model in eval mode: no dropout, no NEFTune
    loop = _PhaseLoop(job, engine, gas, group_names, stream, bad_total, start_step)
    if job.log:
        job.log.phase_table(job, engine, group_names, gas)
    progress = job.log.progress(job, start_step) if job.log else None
    try:
        for step in range(start_step + 1, job.phase.steps + 1):
            loop.step(step, progress)
    finally:
        if progress is not None:
            progress.stop()
    if job.log:
        loop.log_summary()
    _write_phase_model(engine, job)
    return job.out_dir


@dataclass
class _ResumePoint:
    path: Path
    state: dict  # trainer_state.json
    resharded: bool  # written by another number of processes: DeepSpeed loads its universal form


def _resume_point(job: PhaseJob) -> _ResumePoint | None:
    """The run's latest checkpoint if it belongs to this phase."""
    path = ckpt.latest(job.run)
    if path is None:
        return None
    state = ckpt.read_trainer_state(path)
    if state["stage"] != job.stage or state["phase_index"] != job.index:
        return None
    return _ResumePoint(path, state, state.get("world_size", 1) != job.dist.world_size)


def _resume(engine, job: PhaseJob, resume: _ResumePoint | None) -> tuple[int, dict | None, int, int]:
    """(step, every shard's data cursor, non-finite steps so far, data shards) at the resume point; a phase's
    start: (0, None, 0, this run's number of processes)."""
    if resume is None:
        return 0, None, 0, job.dist.world_size
    state = resume.state
    states = ckpt.load(engine, resume.path, job.dist.rank, resharded=resume.resharded)
    shards = state.get("data_shards", state.get("world_size", 1))
    was = f" (written by {state['world_size']} process(es), resumed on {job.dist.world_size})" \
        if resume.resharded else ""
    job.log.info(f"resumed from {resume.path.name} at step {state['step']}{was}")
    return state["step"], states, state["bad_steps"], shards


def _agreed(error: UserError) -> UserError:
    """An error every rank raises at the same point because it follows from all-reduced values."""
    error.agreed = True
    return error


class _PhaseLoop:
    """The steps of one phase and what they share: the engine, this rank's batches, the counters that stop it."""

    def __init__(self, job: PhaseJob, engine, gas: int, group_names: list, stream, bad_total: int, start_step: int):
        self.job, self.engine, self.gas, self.group_names = job, engine, gas, group_names
        self.stream = stream  # train.shards.RankStream
        self.bad_total, self.consecutive_bad, self.saved_step = bad_total, 0, start_step
        # time spent waiting for data and in steps since the last log line (the first step, which starts the
        # loader's workers, is left out), and whether the phase has warned about it
        self.waited, self.elapsed, self.first, self.warned = 0.0, 0.0, start_step + 1, False
        vc = _inner(engine.module).config
        self.attn, self.dtype = vc._attn_implementation, next(engine.module.parameters()).dtype
        self.blank = {"image_token_id": vc.image_token_id, "tile": vc.vision_config.image_size, "pad_id": job.pad_id,
                      "image_seq_len": image_seq_len(vc.vision_config.image_size, vc.vision_config.patch_size,
                                                     vc.scale_factor)}

    def step(self, step: int, progress) -> None:
        job, phase, engine, train = self.job, self.job.phase, self.engine, self.job.recipe.train
        t0 = time.perf_counter()
        micro, error = self.fetch(step)
        waited = time.perf_counter() - t0
        # before the step's first collective: a rank without data must not leave the others waiting inside one
        ckpt.agree(error, signals=False)
        loss, tokens = self.forward_backward(micro)
        finite = math.isfinite(loss)
        if not finite and engine.was_step_applied():
            raise _agreed(TrainingStopped(f"non-finite loss at step {step} and the optimizer step was not skipped",
                                          "use a ZeRO config whose optimizer skips invalid gradient norms"))
        self.bad_total += not finite
        self.consecutive_bad = 0 if finite else self.consecutive_bad + 1
        dt = time.perf_counter() - t0
        if step > self.first:
            self.waited, self.elapsed = self.waited + waited, self.elapsed + dt
        lrs = {n: g["lr"] for n, g in zip(self.group_names, engine.optimizer.param_groups)}
        at_log = step % train.log_every == 0 or step == phase.steps
        memory, data_wait = (_peak_rss_mb(), self.data_wait(step)) if at_log else (None, None)
        if job.log:
            job.log.step(job, step, loss if finite else None, lrs, tokens / dt, self.stream, self.bad_total, progress,
                         memory, data_wait)
        if self.consecutive_bad >= train.max_bad_steps:
            raise _agreed(TrainingStopped(
                f"{self.consecutive_bad} steps in a row had a non-finite loss (last at step {step}); the last good "
                f"checkpoint is {ckpt.latest(job.run) or 'none'}", "lower the learning rate or check the data"))
        last = step == phase.steps
        if finite and (step % train.checkpoint_every == 0 or last):
            self.save(step)
        signum = ckpt.agree()  # a scheduler's signal: stop after this step, not the next, at a checkpoint
        if signum is not None:
            if self.saved_step != step:
                self.save(step)
            raise ckpt.stopped(signum, f"at step {step} of {phase.steps} of phase '{phase.name}'",
                               f"checkpoint {ckpt.step_dir(job.run, job.index, step).name} written")
        if job.evaluator and (step % job.evaluator.every == 0 or last):
            job.evaluator(engine, job, step)

    def data_wait(self, step: int) -> float | None:
        """The share of step time the slowest rank waited for its data since the last log line (None before any
        step was measured); warns once a phase when it passes DATA_WAIT_WARN."""
        import torch

        if self.elapsed == 0.0:
            return None
        share = torch.tensor([self.waited / self.elapsed], dtype=torch.float64, device=ckpt.comm_device())
        if torch.distributed.is_initialized():
            torch.distributed.all_reduce(share, op=torch.distributed.ReduceOp.MAX)
        self.waited, self.elapsed, share = 0.0, 0.0, float(share)
        if share > DATA_WAIT_WARN and not self.warned and self.job.log:
            self.warned = True
            self.job.log.info(f"[yellow]warning[/]: training waited for data {share:.0%} of the time up to step "
                              f"{step}; raise train.num_workers (now {self.job.recipe.train.num_workers}), or cache the "
                              "video frames first (smolvlm data cache)")
        return round(share, 4)

    def fetch(self, step: int) -> tuple[list, UserError | None]:
        """This rank's micro-batches for `step`, or the error that ends its data (for the ranks to agree on)."""
        try:
            return self.stream.step(), None
        except StopIteration:
            return [], TrainingStopped(f"phase '{self.job.phase.name}' ran out of data at step {step} of "
                                       f"{self.job.phase.steps}", "raise the sources' caps or lower the phase's steps")
        except UserError as e:  # also too many unusable samples, a changed mixture on resume
            return [], e

    def forward_backward(self, micro: list) -> tuple[float, float]:
        """One optimizer step over the micro-batches: (loss per supervised token of the global batch, its tokens)."""
        engine, gas, world, pad = self.engine, self.gas, self.job.dist.world_size, self.job.pad_id
        n_tokens, tokens = _all_sum([sum(float((b["labels"][:, 1:] != -100).sum()) for b in micro),
                                     sum(float((b["input_ids"] != pad).sum()) for b in micro)])
        loss_sum = 0.0
        for b in micro:
            b = fit_to_attention(add_blank_image(b, **self.blank), self.attn, self.dtype)
            b = {k: v.to(engine.device) for k, v in b.items() if v is not None}
            labels = b.pop("labels")
            total = supervised_loss_sum(engine, b, labels)
            loss_sum += float(total.detach())
            scaled = total / max(n_tokens, 1.0) * gas * world
            engine.backward(scaled)
            engine.step()
        return _all_sum([loss_sum])[0] / max(n_tokens, 1.0), tokens

    def save(self, step: int) -> None:
        job, world = self.job, self.job.dist.world_size
        ckpt.save(self.engine, job.run, job.index, step,
                  {"stage": job.stage, "phase_index": job.index, "phase": job.phase.name, "step": step,
                   "bad_steps": self.bad_total, "world_size": world, "data_shards": self.stream.n_shards},
                  self.stream.states(), job.dist.rank, job.recipe.train.keep_last)
        self.saved_step = step

    def log_summary(self) -> None:
        stream = self.stream
        skipped = ", ".join(f"{r} {n}" for r, n in stream.skipped.most_common()) or "none"
        fitted = ", ".join(f"{r} {n}" for r, n in stream.fitted.most_common()) or "none"
        self.job.log.info(f"phase '{self.job.phase.name}' done: rank 0 read {stream.seen} samples; skipped: "
                          f"{skipped}; fitted to max_seq_len: {fitted}; non-finite steps: {self.bad_total}")


def _write_phase_model(engine, job: PhaseJob) -> None:
    from .consolidate import merged_model, record_video_sampling, write_model_folder

    state = ckpt.gather_state_dict(engine, job.dist.rank)
    if job.dist.main:
        write_model_folder(merged_model(state, job.start_dir, job.phase), job.start_dir, job.out_dir,
                           extra=record_video_sampling(job.phase, job.recipe.images))
    barrier()

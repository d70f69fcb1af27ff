# `smolvlm plan`: the recipe's SmolVLM built on the meta device (no weights, no network) to count every phase's
# parameters exactly, then memory per GPU (train/plan.py's arithmetic) and DeepSpeed's estimate, as one table.
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from .errors import RecipeError
from .parts import Part, resolve_text, resolve_vision
from .recipe import ModelSection, Phase, Recipe, load_recipe
from .train import plan as mem

# Shapes of the hub parts the shipped recipes name (their config.json on the Hub, as in REFERENCE.md), so `plan`
# works before `smolvlm download`. A part in the local cache or a local folder is read instead.
KNOWN_VISION = {
    "google/siglip-base-patch16-512": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                           intermediate_size=3072, image_size=512, patch_size=16),
}
_SMOLLM2 = dict(vocab_size=49152, max_position_embeddings=8192, tie_word_embeddings=True)  # 49152 = its tokenizer
KNOWN_TEXT = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                                                num_key_value_heads=3, intermediate_size=1536, **_SMOLLM2),
    "HuggingFaceTB/SmolLM2-360M-Instruct": dict(hidden_size=960, num_hidden_layers=32, num_attention_heads=15,
                                                num_key_value_heads=5, intermediate_size=2560, **_SMOLLM2),
}
GPUS_PER_NODE = 8  # for DeepSpeed's estimator, which reports CPU memory per node


@dataclass
class PhaseCount:
    total: int
    trainable: int
    largest_layer: int  # parameters of the largest module (DeepSpeed's "largest layer")
    modes: dict[str, str]


@dataclass
class ZeroSetup:
    name: str
    stage: int
    offload_optimizer: bool
    offload_params: bool


def _use_known(ref: str, revision: str | None, table: dict) -> bool:
    """The known shapes stand in for a hub part that is neither a local path nor in the local cache."""
    if ref not in table or Path(ref).expanduser().exists():
        return False
    from huggingface_hub import try_to_load_from_cache

    return not isinstance(try_to_load_from_cache(ref, "config.json", revision=revision), str)


def _vision_part(m: ModelSection) -> Part:
    if _use_known(m.vision.source, m.vision.revision, KNOWN_VISION):
        from transformers import SiglipVisionConfig

        return Part("vision", "known", m.vision.source, SiglipVisionConfig(**KNOWN_VISION[m.vision.source]))
    return resolve_vision(m.vision.source, m)  # random, folder or cached hub part; else a PartError naming it


def _text_part(m: ModelSection) -> Part:
    if _use_known(m.text.source, m.text.revision, KNOWN_TEXT):
        from transformers import LlamaConfig

        return Part("text", "known", m.text.source, LlamaConfig(**KNOWN_TEXT[m.text.source]))
    return resolve_text(m.text.source, m)


def _tokenizer_length(part: Part, m: ModelSection) -> int:
    """Tokens of the text part's tokenizer plus SmolVLM's, as `init` adds them (and refuses a SmolVLM tokenizer)."""
    from .tokens import add_smolvlm_tokens, build_builtin_tokenizer, smolvlm_special_tokens

    if part.kind == "known":
        return part.config.vocab_size + len(smolvlm_special_tokens())
    if part.kind == "random":
        tokenizer = build_builtin_tokenizer(part.random_spec.tokenizer_vocab_size)
    else:
        from transformers import AutoTokenizer

        where = Path(m.text.tokenizer).expanduser() if m.text.tokenizer else part.path
        kwargs = {"gguf_file": part.path.name} if part.kind == "gguf" else {}
        tokenizer = AutoTokenizer.from_pretrained(part.path.parent if part.kind == "gguf" else where, **kwargs)
    add_smolvlm_tokens(tokenizer)
    return len(tokenizer)


def _lm_config(part: Part, n_tokens: int):
    if part.kind != "random":
        return part.config
    from transformers import LlamaConfig

    spec = part.random_spec  # the LM parts.load_text builds for a random part (its vocab is replaced below)
    return LlamaConfig(vocab_size=n_tokens, **spec.model_dump(exclude={"tokenizer_vocab_size"}),
                       rope_parameters={"rope_type": "default", "rope_theta": 100000.0})


def plan_config(m: ModelSection):
    """(SmolVLMConfig as `init` would build it, where each part's shapes came from)."""
    from .assemble import build_config, validate_parts
    from .tokens import IMAGE_TOKEN, padded_vocab_size, smolvlm_special_tokens

    vision, text = _vision_part(m), _text_part(m)
    validate_parts(m, vision, text)
    n_tokens = _tokenizer_length(text, m)
    specials = smolvlm_special_tokens()
    image_token_id = n_tokens - len(specials) + specials.index(IMAGE_TOKEN)
    vocab = padded_vocab_size(n_tokens, m.vocab_multiple)
    # the pad id changes no shape; `init` takes it from the tokenizer
    config = build_config(m, vision.config, _lm_config(text, n_tokens), vocab, image_token_id, None)
    known = "shapes of the released config (the part is not in the local cache)"
    origins = {p.role: f"{p.ref}: {known}" if p.kind == "known" else p.origin for p in (vision, text)}
    return config, origins


def count_phase(config, phase: Phase) -> PhaseCount:
    """The phase's model on the meta device with its adapters (peft, as training wraps it): exact counts."""
    import torch
    from transformers import SmolVLMForConditionalGeneration

    from .train.phases import apply_phase, trainable_summary

    with torch.device("meta"):
        model = SmolVLMForConditionalGeneration(config)
    model = apply_phase(model, phase)
    rows = trainable_summary(model, phase)
    largest = max(sum(p.numel() for p in mod.parameters(recurse=False)) for mod in model.modules())
    return PhaseCount(total=sum(r["total"] for r in rows), trainable=sum(r["trainable"] for r in rows),
                      largest_layer=largest, modes={r["part"]: r["mode"] for r in rows})


def shapes_of(config) -> mem.VLMShapes:
    from .assemble import image_seq_len

    t, v = config.text_config, config.vision_config
    return mem.VLMShapes(
        text_layers=t.num_hidden_layers, text_hidden=t.hidden_size, text_heads=t.num_attention_heads,
        vocab=t.vocab_size, vision_layers=v.num_hidden_layers, vision_hidden=v.hidden_size,
        vision_heads=v.num_attention_heads, patches_per_tile=(v.image_size // v.patch_size) ** 2,
        tokens_per_tile=image_seq_len(v.image_size, v.patch_size, config.scale_factor),
    )


def zero_setup(name: str) -> ZeroSetup:
    from .train.dsconfig import load_ds_config

    zero = load_ds_config(name).get("zero_optimization") or {}

    def offloaded(key: str) -> bool:
        return (zero.get(key) or {}).get("device", "none") in ("cpu", "nvme")

    stage = int(zero.get("stage", 0))  # DeepSpeed offloads parameters only under ZeRO-3
    return ZeroSetup(name, stage, offloaded("offload_optimizer"), offloaded("offload_param") and stage == 3)


def deepspeed_estimates(total: int, largest: int, gpus: int, stage: int) -> list[tuple[str, int, int]]:
    """DeepSpeed's own estimator: (offload, GPU bytes, CPU bytes per node); it counts every parameter trainable."""
    per_node = GPUS_PER_NODE if gpus % GPUS_PER_NODE == 0 else gpus
    nodes = gpus // per_node
    logging.disable(logging.WARNING)  # its import logs "Setting accelerator to CPU" on stdout on a CPU machine
    try:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs as zero3
        from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs as zero2
    finally:
        logging.disable(logging.NOTSET)
    rows = []
    if stage == 3:
        for label, opt, par in (("none", False, False), ("optimizer", True, False), ("all", True, True)):
            cpu, gpu, _ = zero3(total, largest, per_node, nodes, cpu_offload=opt, cpu_offload_params=par)
            rows.append((label, gpu, cpu))
    elif stage in (1, 2):
        for label, opt in (("none", False), ("optimizer", True)):
            cpu, gpu = zero2(total, per_node, nodes, cpu_offload=opt)
            rows.append((label, gpu, cpu))
    return rows


@dataclass
class PlanInputs:
    recipe: Recipe
    stage: str
    gpus: int
    gpu_memory: float  # GiB
    shapes: mem.VLMShapes
    zero: ZeroSetup
    origins: dict[str, str]
    counts: list[PhaseCount]
    supervised: float = 0.25  # share of the token positions with a label: the loss projects only those

    @property
    def precision(self) -> str:
        return "fp32" if self.recipe.train.precision == "fp32" else "bf16"  # auto: bf16 on the GPUs planned for


def _offloads(stage: int) -> list[tuple[str, bool, bool]]:
    """(label, optimizer offload, parameter offload), least intrusive first; what the ZeRO stage allows."""
    return [("", False, False)] + ([("optimizer offload", True, False)] if stage >= 1 else []) + (
        [("opt. + param offload", True, True)] if stage == 3 else [])


def _fit_verdict(options: list[tuple[str, int]], gpu_bytes: int) -> str:
    fit = mem.cheapest_fit(options, gpu_bytes)
    if fit is None:
        return f"[red]no[/]: {mem.human(min(need for _, need in options))} at best"
    return "[green]yes[/]" + (f", with {fit}" if fit else "")


def phase_cells(inp: PlanInputs, phase: Phase, count: PhaseCount) -> dict[str, str]:
    """One column of the table: row label -> value, for one phase."""
    z, micro, seq = inp.zero, phase.micro_batch_size, phase.max_seq_len
    act_bytes = 2 if inp.precision == "bf16" else 4

    def states(opt: bool, par: bool) -> mem.ModelStates:
        return mem.model_states(count.total, count.trainable, inp.gpus, z.stage, inp.precision, offload_optimizer=opt,
                                offload_params=par, largest_layer=count.largest_layer)

    acts = {ck: mem.activations(inp.shapes, micro, seq, act_bytes, ck, count.modes["vision"] != "frozen",
                                inp.supervised) for ck in (False, True)}
    base, per_step = states(False, False), micro * inp.gpus
    cells = {
        "vision/conn./text/emb.": "/".join(count.modes.values()),
        "params (with adapters)": f"{count.total:,}",
        "trainable": f"{count.trainable:,}",
        "frozen": f"{count.total - count.trainable:,}",
        "micro batch x seq": f"{micro} x {seq}",
        f"grad accum. ({inp.gpus} GPUs)": f"{phase.global_batch_size // per_step}"
        if phase.global_batch_size % per_step == 0 else f"[red]{phase.global_batch_size} not divisible[/]",
        "tokens / optimizer step": f"{mem.tokens_per_step(phase.global_batch_size, seq):,}",
        "weights / GPU": mem.human(base.weights),
        "grads / GPU": mem.human(base.grads),
        "fp32 master+Adam / GPU" if inp.precision == "bf16" else "Adam / GPU": mem.human(base.optimizer),
    }
    if z.stage == 3:
        cells["gathered layer / GPU"] = mem.human(base.gathered)
    for label, opt, par in _offloads(z.stage):
        cells[f" + {label}" if label else "model states / GPU"] = mem.human(states(opt, par).total)
    a, c = acts[False], acts[True]
    cells["decoder act. (ckpt off/on)"] = f"{mem.human(a.text)} / {mem.human(c.text)}"
    cells["vision act. (ckpt off/on)"] = (f"{mem.human(a.vision)} / {mem.human(c.vision)}" if a.tiles
                                          else "0 (frozen)")
    cells["vision tiles / micro batch"] = f"{a.tiles:,}"
    cells[f"logits + loss ({inp.supervised:.0%} supervised)"] = mem.human(a.logits)
    cells["activations (ckpt off/on)"] = f"{mem.human(a.total)} / {mem.human(c.total)}"
    configured = states(z.offload_optimizer, z.offload_params).total + acts[phase.gradient_checkpointing].total
    cells["as configured"] = mem.human(configured) + (" ckpt" if phase.gradient_checkpointing else "") + (
        " [green]fits[/]" if configured <= inp.gpu_memory * mem.GIB else " [red]too big[/]")
    options = [(", ".join(x for x in (label, "gradient checkpointing" if ck else "") if x), states(o, p).total
                + acts[ck].total) for label, o, p in _offloads(z.stage) for ck in (False, True)]
    cells[f"fits in {inp.gpu_memory:g} GiB?"] = _fit_verdict(options, int(inp.gpu_memory * mem.GIB))
    for label, gpu, cpu in deepspeed_estimates(count.total, count.largest_layer, inp.gpus, z.stage):
        cells[f"DeepSpeed, offload {label}"] = f"{mem.human(gpu)} / {mem.human(cpu)}"
    return cells


NOTES = (
    "Model states per GPU (ZeRO paper, mixed precision): bf16 weights 2 B x all parameters; per trainable parameter "
    "bf16 gradients 2 B + fp32 master weights and Adam moments 12 B (fp32 training: 4 + 4 + 8 B). ZeRO-1/2/3 partition the optimizer / + gradients / + weights "
    "over the GPUs; ZeRO-3 adds the largest layer gathered (4 B/param). Optimizer offload moves optimizer and "
    "gradient partitions to the CPU, param offload the weights too.",
    "Activations (Korthikanti et al. 2022): seq x batch x hidden x 34 B per layer (fused attention: no "
    "5 x heads x seq / hidden score term); with checkpointing 2 B x seq x batch x hidden per layer + one whole layer. "
    "Vision: worst case, every token an image token (micro x seq / tokens per tile tiles). Logits, at the supervised "
    "positions only (--supervised share of batch x seq): vocab x 10 B each (bf16, fp32 copy, fp32 log-softmax; fp32 "
    "training: 4 B per activation value, logits 8 B).",
    "Not counted: CUDA context, allocator fragmentation, communication buckets: keep ~10% free. DeepSpeed's "
    "estimator (GPU / CPU per node) counts every parameter as trainable; nodes of 8 GPUs (one node if --gpus is not a multiple of 8).",
)


def print_plan(inp: PlanInputs, console) -> None:
    from rich.table import Table

    phases = inp.recipe.stages[inp.stage].phases
    columns = [phase_cells(inp, phase, count) for phase, count in zip(phases, inp.counts)]
    z = inp.zero
    offload = next((f", {label}" for label, o, p in _offloads(z.stage)
                    if label and (o, p) == (z.offload_optimizer, z.offload_params)), "")
    table = Table(title=f"{inp.recipe.name}: {inp.stage} stage on {inp.gpus} GPUs x {inp.gpu_memory:g} GiB, "
                        f"DeepSpeed {z.name} (ZeRO-{z.stage}{offload}), {inp.precision}", title_justify="left")
    table.add_column("per phase")
    for i, phase in enumerate(phases, 1):
        table.add_column(f"{i}. {phase.name}", justify="right")
    for label in columns[0]:
        table.add_row(label, *(col.get(label, "") for col in columns))
    for role, origin in inp.origins.items():
        console.print(f"{role} part: {origin}", highlight=False)
    console.print(table)
    for note in NOTES:
        console.print(f"[dim]{note}[/]", highlight=False)


def cli_plan(recipe_path: Path, stage: str, gpus: int, gpu_memory: float, overrides: list[str],
             deepspeed: str | None, supervised: float = 0.25) -> None:
    from rich.console import Console

    recipe = load_recipe(recipe_path, overrides)
    if stage not in recipe.stages:
        known = ", ".join(recipe.stages) or "none"
        raise RecipeError(f"recipe '{recipe_path}' has no stages.{stage}", f"use --stage with one of: {known}")
    zero = zero_setup(deepspeed or recipe.train.deepspeed)  # a bad name fails before the model is built
    config, origins = plan_config(recipe.model_section("smolvlm plan"))
    inputs = PlanInputs(
        recipe=recipe, stage=stage, gpus=gpus, gpu_memory=gpu_memory, shapes=shapes_of(config), zero=zero,
        origins=origins, counts=[count_phase(config, phase) for phase in recipe.stages[stage].phases],
        supervised=supervised,
    )
    print_plan(inputs, Console())

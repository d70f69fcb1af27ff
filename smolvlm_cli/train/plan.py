# Memory and throughput arithmetic behind `smolvlm plan`: bytes of model states per GPU under each ZeRO stage and
# offload, activation bytes of the decoder, the SigLIP encoder and the logits, and whether a phase fits. No torch.
from __future__ import annotations

import math
from dataclasses import dataclass

GIB = 2**30


@dataclass(frozen=True)
class StateBytes:
    """Bytes per parameter: weights (all parameters), gradients and optimizer states (trainable ones only)."""

    weights: int
    grads: int
    optimizer: int


# The ZeRO paper's mixed-precision accounting, 2 + 2 + 12: bf16 weights and gradients, and fp32 master weights +
# Adam's two moments. In fp32 there is no separate master copy: 4 + 4 + 8.
PRECISION = {"bf16": StateBytes(2, 2, 12), "fp32": StateBytes(4, 4, 8)}


@dataclass(frozen=True)
class ModelStates:
    """Bytes of model states one GPU holds."""

    weights: int
    grads: int
    optimizer: int
    gathered: int = 0  # ZeRO-3: the largest layer's weights and gradients, whole while it computes

    @property
    def total(self) -> int:
        return self.weights + self.grads + self.optimizer + self.gathered


def model_states(total: int, trainable: int, gpus: int, stage: int, precision: str = "bf16", *,
                 offload_optimizer: bool = False, offload_params: bool = False,
                 largest_layer: int = 0) -> ModelStates:
    """Per-GPU model states of `total` parameters of which `trainable` train, over `gpus` data-parallel ranks.

    ZeRO stage 1 partitions the optimizer states, 2 also the gradients, 3 also the weights (frozen ones too); a
    partition is ceil(bytes / gpus). Optimizer offload (ZeRO-Offload) keeps the optimizer states and the gradient
    partitions they update on the CPU; parameter offload (stage 3 only) keeps the weight partitions there too.
    Stage 3 gathers one layer at a time: (weights + grads) bytes x `largest_layer` on top, as DeepSpeed's estimator
    counts it."""
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"ZeRO stage {stage} is not 0-3")
    if offload_params and stage != 3:
        raise ValueError("parameter offload needs ZeRO stage 3")
    b = PRECISION[precision]

    def share(n_bytes: int, partitioned: bool) -> int:
        return math.ceil(n_bytes / gpus) if partitioned else n_bytes

    weights = 0 if offload_params else share(b.weights * total, stage >= 3)
    grads = 0 if offload_optimizer else share(b.grads * trainable, stage >= 2)
    optimizer = 0 if offload_optimizer else share(b.optimizer * trainable, stage >= 1)
    gathered = (b.weights + b.grads) * largest_layer if stage == 3 else 0
    return ModelStates(weights, grads, optimizer, gathered)


def layer_activation_bytes(seq: int, batch: int, hidden: int, heads: int, act_bytes: int = 2,
                           fused_attention: bool = True) -> int:
    """Activations one transformer layer keeps for its backward (Korthikanti et al. 2022, no parallelism):
    seq*batch*hidden*(34 + 5*heads*seq/hidden) bytes with 16-bit activations, scaled by act_bytes/2.
    The 5*heads*seq^2*batch part is the attention scores, softmax and its dropout mask; a fused attention kernel
    (flash-attention 2, PyTorch's sdpa kernels: what training uses on GPUs) never stores them."""
    scores = 0 if fused_attention else 5 * heads * seq * seq * batch
    return (34 * seq * batch * hidden + scores) * act_bytes // 2


def stack_activation_bytes(layers: int, seq: int, batch: int, hidden: int, heads: int, act_bytes: int = 2,
                           checkpointing: bool = False, fused_attention: bool = True) -> int:
    """A stack of `layers` layers. With gradient checkpointing each layer keeps only its input (seq*batch*hidden
    values, 2*seq*hidden bytes per sample at 16 bits) and one layer at a time is recomputed with all of its own."""
    full = layer_activation_bytes(seq, batch, hidden, heads, act_bytes, fused_attention)
    if not checkpointing:
        return layers * full
    return layers * seq * batch * hidden * act_bytes + full


def logits_bytes(batch: int, seq: int, vocab: int, act_bytes: int = 2, supervised: float = 1.0) -> int:
    """The LM head's output and the loss on it, at the `supervised` share of the positions (the only ones the
    trainer projects to the vocabulary): logits in the activation dtype, the fp32 copy the loss takes (`.float()`,
    none when already fp32) and the fp32 log-softmax cross-entropy keeps for its backward."""
    upcast = 4 if act_bytes < 4 else 0
    return math.ceil(batch * seq * supervised) * vocab * (act_bytes + upcast + 4)


@dataclass(frozen=True)
class VLMShapes:
    """What the activation formulas read from a SmolVLM config."""

    text_layers: int
    text_hidden: int
    text_heads: int
    vocab: int
    vision_layers: int
    vision_hidden: int
    vision_heads: int
    patches_per_tile: int  # (image_size / patch_size)^2: the encoder's sequence length
    tokens_per_tile: int  # after pixel shuffle: what one tile costs in the LM's sequence


@dataclass(frozen=True)
class Activations:
    text: int
    vision: int
    logits: int
    tiles: int  # image tiles the vision encoder runs on per micro-batch (see `activations`)

    @property
    def total(self) -> int:
        return self.text + self.vision + self.logits


def activations(s: VLMShapes, micro_batch: int, seq: int, act_bytes: int = 2, checkpointing: bool = False,
                vision_trains: bool = True, supervised: float = 1.0) -> Activations:
    """Per-GPU activations of one micro-batch of `micro_batch` sequences of `seq` tokens (packed or padded to it).

    Upper bound for the vision encoder: every token an image token, i.e. micro_batch * (seq // tokens_per_tile)
    tiles of patches_per_tile patches. A frozen vision tower keeps nothing for backward (nothing in it needs a
    gradient), so it counts 0 then. The connector (one Linear) is left out."""
    text = stack_activation_bytes(s.text_layers, seq, micro_batch, s.text_hidden, s.text_heads, act_bytes,
                                  checkpointing)
    tiles = micro_batch * (seq // s.tokens_per_tile) if vision_trains else 0
    vision = stack_activation_bytes(s.vision_layers, s.patches_per_tile, tiles, s.vision_hidden, s.vision_heads,
                                     act_bytes, checkpointing) if tiles else 0
    return Activations(text, vision, logits_bytes(micro_batch, seq, s.vocab, act_bytes, supervised), tiles)


def tokens_per_step(global_batch: int, seq: int) -> int:
    """Token positions per optimizer step (global batch x max_seq_len; real tokens are fewer without packing)."""
    return global_batch * seq


def cheapest_fit(options: list[tuple[str, int]], gpu_bytes: int) -> str | None:
    """The first option (label, bytes) that fits in `gpu_bytes`; options go from least to most intrusive."""
    return next((label for label, need in options if need <= gpu_bytes), None)


def human(n_bytes: int) -> str:
    """GiB with two decimals; MiB / KiB below one GiB (the tiny recipe's numbers)."""
    for unit, size in (("GiB", GIB), ("MiB", 2**20)):
        if n_bytes >= size:
            return f"{n_bytes / size:,.2f} {unit}"
    return f"{n_bytes / 2**10:,.2f} KiB"

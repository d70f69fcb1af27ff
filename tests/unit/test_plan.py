"""The arithmetic of `smolvlm plan`: model-state bytes per GPU under each ZeRO stage and offload, activation bytes
(Korthikanti et al.), logits, tokens per step. Exact expected values, written as the formulas' own products."""
from __future__ import annotations

import pytest

from smolvlm_cli.train import plan as mem

PSI = 7_500_000_000  # the ZeRO paper's Figure 1: 7.5B parameters, 64 GPUs, K = 12


@pytest.mark.parametrize("stage,expected", [
    (0, 16 * PSI),  # 120 GB
    (1, 2 * PSI + 2 * PSI + 12 * PSI // 64),  # 31.4 GB
    (2, 2 * PSI + (2 + 12) * PSI // 64),  # 16.6 GB
    (3, (2 + 2 + 12) * PSI // 64),  # 1.9 GB
])
def test_zero_stages_reproduce_the_zero_paper(stage, expected):
    assert mem.model_states(PSI, PSI, 64, stage).total == expected
    assert [round(mem.model_states(PSI, PSI, 64, s).total / 1e9, 1) for s in range(4)] == [120.0, 31.4, 16.6, 1.9]


def test_frozen_parameters_carry_weights_only():
    s = mem.model_states(1_000_000, 400_000, 8, 3, largest_layer=10_000)
    assert (s.weights, s.grads, s.optimizer, s.gathered) == (2_000_000 // 8, 800_000 // 8, 4_800_000 // 8, 40_000)
    assert s.total == 990_000
    z2 = mem.model_states(1_000_000, 400_000, 8, 2, largest_layer=10_000)
    assert (z2.weights, z2.grads, z2.optimizer, z2.gathered) == (2_000_000, 100_000, 600_000, 0)
    z1 = mem.model_states(1_000_000, 400_000, 8, 1)
    assert (z1.weights, z1.grads, z1.optimizer) == (2_000_000, 800_000, 600_000)


def test_offload_and_fp32():
    opt = mem.model_states(1_000_000, 400_000, 8, 3, offload_optimizer=True, largest_layer=10_000)
    assert (opt.weights, opt.grads, opt.optimizer, opt.gathered) == (250_000, 0, 0, 40_000)
    both = mem.model_states(1_000_000, 400_000, 8, 3, offload_optimizer=True, offload_params=True,
                            largest_layer=10_000)
    assert both.total == 40_000  # only the layer being computed
    fp32 = mem.model_states(1_000_000, 400_000, 8, 0, "fp32")
    assert (fp32.weights, fp32.grads, fp32.optimizer) == (4_000_000, 1_600_000, 3_200_000)
    assert mem.model_states(3, 3, 2, 3).total == 3 + 3 + 18  # partitions round up: ceil(6/2), ceil(6/2), ceil(36/2)
    with pytest.raises(ValueError, match="parameter offload needs ZeRO stage 3"):
        mem.model_states(10, 10, 2, 2, offload_params=True)
    with pytest.raises(ValueError, match="ZeRO stage 4"):
        mem.model_states(10, 10, 2, 4)


def test_layer_activations_follow_korthikanti():
    s, b, h, a = 2048, 1, 4096, 32
    assert mem.layer_activation_bytes(s, b, h, a, fused_attention=False) == s * b * h * (34 + 5 * a * s // h)
    assert mem.layer_activation_bytes(s, b, h, a, fused_attention=False) == 956_301_312
    assert mem.layer_activation_bytes(s, b, h, a) == 34 * s * b * h == 285_212_672  # no stored scores
    assert mem.layer_activation_bytes(s, b, h, a, act_bytes=4) == 2 * 285_212_672
    assert mem.stack_activation_bytes(24, s, b, h, a) == 24 * 285_212_672
    # checkpointing: each layer's input (2 bytes x s x b x h) + one layer recomputed whole
    assert mem.stack_activation_bytes(24, s, b, h, a, checkpointing=True) == 24 * 2 * s * b * h + 285_212_672


def test_logits_and_tokens():
    assert mem.logits_bytes(8, 7000, 49280) == 8 * 7000 * 49280 * (2 + 4 + 4) == 27_596_800_000
    assert mem.logits_bytes(8, 7000, 49280, act_bytes=4) == 8 * 7000 * 49280 * (4 + 4)
    # the lean loss: only the supervised positions reach the vocabulary
    assert mem.logits_bytes(8, 7000, 49280, supervised=0.1) == 5600 * 49280 * 10
    assert mem.logits_bytes(3, 7, 10, supervised=0.5) == 11 * 10 * 10  # 10.5 positions round up
    assert mem.tokens_per_step(1024, 7000) == 7_168_000


SHAPES_256M = mem.VLMShapes(text_layers=30, text_hidden=576, text_heads=9, vocab=49280, vision_layers=12,
                            vision_hidden=768, vision_heads=12, patches_per_tile=1024, tokens_per_tile=64)


def test_vlm_activations_for_the_256m_dora_phase():
    a = mem.activations(SHAPES_256M, micro_batch=8, seq=7000)
    assert a.tiles == 8 * (7000 // 64) == 872  # every token an image token
    assert a.text == 30 * 34 * 7000 * 8 * 576
    assert a.vision == 12 * 34 * 1024 * 872 * 768
    assert a.logits == 8 * 7000 * 49280 * 10
    assert a.total == a.text + a.vision + a.logits
    ck = mem.activations(SHAPES_256M, micro_batch=8, seq=7000, checkpointing=True)
    assert ck.text == 30 * 2 * 7000 * 8 * 576 + 34 * 7000 * 8 * 576
    assert ck.vision == 12 * 2 * 1024 * 872 * 768 + 34 * 1024 * 872 * 768
    frozen = mem.activations(SHAPES_256M, micro_batch=8, seq=7000, vision_trains=False)
    assert (frozen.vision, frozen.tiles, frozen.text) == (0, 0, a.text)


def test_cheapest_fit_and_units():
    options = [("", 90 * mem.GIB), ("gradient checkpointing", 60 * mem.GIB), ("offload", 10 * mem.GIB)]
    assert mem.cheapest_fit(options, 80 * mem.GIB) == "gradient checkpointing"
    assert mem.cheapest_fit(options, 100 * mem.GIB) == ""
    assert mem.cheapest_fit(options, 5 * mem.GIB) is None
    assert [mem.human(n) for n in (3 * 2**29, 2**20, 1536)] == ["1.50 GiB", "1.00 MiB", "1.50 KiB"]

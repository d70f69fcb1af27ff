"""recipes/finetune-qlora.yaml on the tiny model (real bitsandbytes 4-bit on the CPU, real DeepSpeed with ZeRO off,
1 process): the LM's projections are bnb Linear4bit and the rest stays plain, the 8-bit optimizer keeps 8-bit state,
the loss falls, the merged export matches the 4-bit adapter model, --keep-adapters writes the adapter; ZeRO-3,
paged 8-bit AdamW without a GPU and an 8-bit optimizer under ZeRO-Offload stop with one line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.test_finetune_data import colour_rows
from tests.integration.test_train import cli, losses

pytestmark = pytest.mark.slow
pytest.importorskip("bitsandbytes")

ROOT = Path(__file__).resolve().parents[2]
QLORA = ROOT / "recipes" / "finetune-qlora.yaml"
STEPS = 10
# Measured on the CPU here: the 4-bit model's logits (bitsandbytes' CPU kernel multiplies in bf16 on AVX512-BF16
# CPUs) and the merged fp32 export's differ by at most 0.0028 (mean 0.0003) on logits up to 0.93.
LOGITS_ATOL = 1e-2


def sets(steps: int) -> list[str]:
    phase = "stages.vision.phases.0"
    values = [f"{phase}.steps={steps}", f"{phase}.global_batch_size=8", f"{phase}.micro_batch_size=4",
              f"{phase}.max_seq_len=256", f"{phase}.schedule.warmup_steps=1", f"{phase}.parts.text.lr=1.0e-2",
              f"{phase}.parts.connector.lr=1.0e-2", "train.checkpoint_every=100", "train.optimizer=adamw_8bit"]
    return [a for s in values for a in ("--set", s)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """One QLoRA run on 40 JSONL rows, shared by the tests below."""
    root = tmp_path_factory.mktemp("qlora")
    jsonl = root / "data" / "train.jsonl"
    rows = colour_rows(jsonl.parent, 40, "image", "img/")
    jsonl.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": [{"type": "image", "path": r["image"]}, {"type": "text", "text": r["question"]}]},
        {"role": "assistant", "content": r["answer"]}]}) + "\n" for r in rows))
    run = root / "run"
    res = cli("train-vision", "--recipe", QLORA, "--init", tiny_model_dir, "--out", run, *sets(STEPS),
              "--data", jsonl)
    assert res.returncode == 0, res.stderr[-3000:]
    return run, jsonl


def adapter_model(run: Path, start: Path):
    """The model as it trained: the 4-bit base from `start`, adapters and connector from the last checkpoint."""
    import torch
    from transformers import AutoModelForImageTextToText

    from smolvlm_cli.recipe import load_recipe
    from smolvlm_cli.train import quantize
    from smolvlm_cli.train.phases import apply_phase

    phase = load_recipe(run / "recipe.yaml").stages["vision"].phases[0]
    model = AutoModelForImageTextToText.from_pretrained(start, dtype=torch.float32,
                                                        quantization_config=quantize.quantization_config(phase, False))
    model = apply_phase(quantize.prepare(model, phase), phase)
    saved = torch.load(next(run.glob("checkpoints/*/state/mp_rank_00_model_states.pt")), weights_only=False)
    unchanged = model.state_dict()
    packed = [k for k, v in unchanged.items() if v.dtype == torch.uint8]
    assert packed and all(torch.equal(unchanged[k], saved["module"][k]) for k in packed)  # NF4 is deterministic
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    missing, _ = model.load_state_dict(saved["module"], strict=False)  # (4-bit quant-state entries: unexpected)
    assert trainable and not trainable & set(missing)
    return model.eval(), saved


def test_qlora_trains_4bit_and_exports_close_logits(trained, tiny_model_dir, tmp_path):
    import bitsandbytes as bnb
    import torch
    from transformers import AutoModelForImageTextToText

    run, _ = trained
    loss = losses(run)
    assert len(loss) == STEPS
    assert sum(loss[-3:]) / 3 < sum(loss[:3]) / 3 - 0.3, loss

    model, saved = adapter_model(run, tiny_model_dir)
    layers = dict(model.named_modules())
    text = [n for n in layers if ".text_model.layers." in n and n.endswith(("q_proj.base_layer", "down_proj.base_layer"))]
    assert text and all(type(layers[n]) is bnb.nn.Linear4bit for n in text)
    assert layers[text[0]].weight.quant_state.quant_type == "nf4"
    plain = [n for n in layers if n.endswith(("vision_model.encoder.layers.0.self_attn.q_proj", "modality_projection.proj",
                                              "lm_head"))]
    assert len(plain) == 3 and all(type(layers[n]) is torch.nn.Linear for n in plain)
    # bitsandbytes' 8-bit AdamW: uint8 moments for the matrices of 4096+ elements (ZeRO off: state in the module file)
    states = [s["__bnb_optimizer_quant_state__"] for s in saved["optimizer"]["state"].values()]
    assert any(s["state1"].dtype == torch.uint8 for s in states) and all("absmax1" in s or s["state1"].dtype ==
                                                                            torch.float32 for s in states)

    out = tmp_path / "merged"
    res = cli("export", run / "checkpoints" / saved_name(run), "--out", out, "--dtype", "float32")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "QLoRA adapters merged into the de-quantised NF4 weights" in res.stdout
    merged = AutoModelForImageTextToText.from_pretrained(out, dtype=torch.float32).eval()
    assert not any("lora" in k for k in merged.state_dict())
    phase_dir = next((run / "phases").glob("00-*"))
    at_end = AutoModelForImageTextToText.from_pretrained(phase_dir, dtype=torch.float32).state_dict()
    assert all(torch.equal(v, at_end[k]) for k, v in merged.state_dict().items())  # same step, same merge

    ids = torch.randint(0, 300, (2, 48), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        four_bit, plain_fp32 = model(input_ids=ids).logits, merged(input_ids=ids).logits
    assert (four_bit - plain_fp32).abs().max() < LOGITS_ATOL
    assert not torch.allclose(four_bit, plain_fp32, atol=1e-7)  # really two computations


def saved_name(run: Path) -> str:
    return next(run.glob("checkpoints/phase0-step*")).name


def test_merge_is_dequantised_base_plus_lora_delta(trained):
    """The merged weight equals the de-quantised NF4 weight + B A * alpha / r, to fp32 rounding; --keep-adapters
    writes that de-quantised base and the peft adapter that reproduces the merged model on it."""
    import torch
    from bitsandbytes.functional import dequantize_4bit
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText

    run, _ = trained
    merged = load_file(next((run / "phases").glob("00-*")) / "model.safetensors")
    model, _ = adapter_model(run, json.loads((run / "run.json").read_text())["init"])
    q = model.base_model.model.model.text_model.layers[1].mlp.down_proj
    base = dequantize_4bit(q.base_layer.weight.data, q.base_layer.weight.quant_state).float()
    delta = q.lora_B["default"].weight @ q.lora_A["default"].weight * q.scaling["default"]
    assert delta.abs().max() > 1e-4  # the adapter trained
    key = "model.text_model.layers.1.mlp.down_proj.weight"
    assert torch.allclose(merged[key], base + delta.detach(), atol=1e-6)

    kept = run.parent / "kept"
    res = cli("export", run / "checkpoints" / saved_name(run), "--out", kept, "--dtype", "float32",
              "--keep-adapters")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "QLoRA adapters kept as a peft adapter" in " ".join(res.stdout.split())
    assert torch.equal(load_file(kept / "model.safetensors")[key], base)
    with_adapter = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(kept), kept / "adapter").eval()
    plain = AutoModelForImageTextToText.from_pretrained(next((run / "phases").glob("00-*"))).eval()
    ids = torch.randint(0, 300, (1, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(with_adapter(input_ids=ids).logits, plain(input_ids=ids).logits, atol=1e-5)


@pytest.mark.parametrize("extra, expected", [
    (["--deepspeed", "zero3"], "ZeRO-3 partitions weights"),
    (["--set", "train.optimizer=paged_adamw_8bit"], "paged_adamw_8bit pages optimizer state through CUDA"),
    (["--deepspeed", "zero3_offload", "--set", "stages.vision.phases.0.parts.text.mode=lora"],
     "cannot run under ZeRO-Offload"),
])
def test_unsupported_combinations_stop_with_one_line(tmp_path, tiny_model_dir, trained, extra, expected):
    _, jsonl = trained
    res = cli("train-vision", "--recipe", QLORA, "--init", tiny_model_dir, "--out", tmp_path / "r", *sets(2),
              "--data", jsonl, *extra)
    assert res.returncode == 2, res.stderr[-2000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0] and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / "r" / "metrics.jsonl").exists()  # stopped before the first step


def test_qlora_only_on_vision_and_text(tmp_path, tiny_model_dir, trained):
    _, jsonl = trained
    res = cli("train-vision", "--recipe", QLORA, "--init", tiny_model_dir, "--out", tmp_path / "r", *sets(2),
              "--data", jsonl, "--set", "stages.vision.phases.0.parts.connector.mode=qlora")
    assert res.returncode == 2 and "part connector cannot be qlora" in res.stderr, res.stderr

# `smolvlm export --format mlx`: an MLX folder that mlx-vlm loads (`mlx_vlm.load`), written by mlx-vlm's own
# converter, plus 4- and 8-bit variants in OUT/q4 and OUT/q8 and a model card saying how to run them.
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from ..errors import UserError

QUANT_BITS = (4, 8)  # each becomes OUT/q<bits> (affine, group size 64: mlx-vlm's defaults)
GROUP_SIZE = 64

# One process for all variants: loading an SmolVLM with mlx-vlm patches transformers' AutoProcessor for the whole
# process (model_type smolvlm then gives mlx-vlm's processor, which returns mx arrays), so it never runs in ours.
_CONVERT = """
import json, sys
from mlx_vlm.convert import convert
for job in json.loads(sys.argv[1]):
    convert(job["src"], job["dst"], quantize=job["bits"] is not None, q_bits=job["bits"] or 4,
            q_group_size=job["group"])
"""


def check_mlx_model(config: dict) -> None:
    """What mlx-vlm's SmolVLM text model (idefics3 LanguageModel) cannot express, as a one-line error: it derives
    head_dim from hidden_size / heads, applies plain RoPE and always has its own lm_head."""
    text = config.get("text_config", {})
    rope = text.get("rope_parameters") or {}
    heads, hidden = text.get("num_attention_heads"), text.get("hidden_size")
    if text.get("head_dim") not in (None, hidden // heads):
        raise UserError(f"--format mlx: head_dim {text['head_dim']} is not hidden_size / heads ({hidden}/{heads}); "
                        "mlx-vlm's SmolVLM text model cannot hold it", "export --format hf instead")
    if rope.get("rope_type", "default") != "default":
        raise UserError(f"--format mlx: rope_type {rope['rope_type']!r} is not supported by mlx-vlm's SmolVLM",
                        "export --format hf instead")
    if config.get("tie_word_embeddings") or text.get("tie_word_embeddings"):
        raise UserError("--format mlx: the model ties lm_head to the embeddings; mlx-vlm's SmolVLM expects its own",
                        "initialise with model.tie_word_embeddings: false (the release recipes do)")


def carry_rope_theta(folder: Path) -> None:
    """transformers 5 writes rope_theta only inside text_config.rope_parameters; mlx-vlm reads text_config.rope_theta
    and silently falls back to 1e6 (SmolLM2 uses 1e5), so the folder carries the plain key as well."""
    path = folder / "config.json"
    config = json.loads(path.read_text())
    text = config["text_config"]
    theta = (text.get("rope_parameters") or {}).get("rope_theta", text.get("rope_theta"))
    if theta is not None:
        text["rope_theta"] = theta
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _convert(jobs: list[dict]) -> None:
    done = subprocess.run([sys.executable, "-c", _CONVERT, json.dumps(jobs)], capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"mlx-vlm's converter failed: {last}", "check the mlx and mlx-vlm versions (pip install "
                        "'smolvlm-cli[mlx]') or export --format hf")


def model_card(bits: int | None, variants: tuple[int, ...]) -> str:
    """How to run this folder with mlx-vlm, and what smolvlm-cli's tests check about mlx-vlm's answers."""
    what = "float32, the weights transformers runs" if bits is None else \
        f"{bits}-bit affine quantisation (group size {GROUP_SIZE}) of the text model and connector; vision in float32"
    others = ", ".join([f"q{b}/ ({b}-bit)" for b in variants] if bits is None else ["../ (float32)"])
    return f"""---
library_name: mlx
pipeline_tag: image-text-to-text
tags: [mlx, smolvlm]
---
# SmolVLM for MLX ({what})

Written by `smolvlm export --format mlx` with mlx-vlm's own converter (`mlx_vlm.convert`) from a merged float32
Hugging Face export (adapters merged). Other variants of this export: {others}.

## Run it (MODEL_DIR: this folder)

```bash
pip install mlx-vlm                 # Apple silicon; on Linux: pip install "mlx[cpu]" mlx-vlm
mlx_vlm.generate --model MODEL_DIR --image photo.jpg --prompt "Describe this image." --max-tokens 100 --temperature 0
```

```python
from mlx_vlm import load, generate
from mlx_vlm.prompt_utils import apply_chat_template

model, processor = load("MODEL_DIR", backend="torchvision")  # the image resizer transformers uses (see below)
prompt = apply_chat_template(processor, model.config, "Describe this image.", num_images=1)
print(generate(model, processor, prompt, image=["photo.jpg"], max_tokens=100, temperature=0.0).text)
```

## What was verified (smolvlm-cli's tests, mlx-vlm 0.7 on CPU)

- mlx-vlm's chat template gives the prompt string transformers' `SmolVLMProcessor` gives.
- With `backend="torchvision"`, the float32 folder's greedy answer to an image prompt equals transformers'
  `generate(do_sample=False)` token for token, every step's log-probabilities within 1e-3 (measured 3e-4 at most;
  a tiny model and the 256M recipe's shapes with the real SmolLM2-135M text model).
- mlx-vlm loads its SmolVLM image processor with the PIL backend; transformers (torchvision >= 0.27) picks the
  torchvision one. Both resize with Lanczos but differ by up to one grey level (1/127.5 after normalising), and
  the folder cannot choose mlx-vlm's backend: `load(folder)` without `backend=`, and the `mlx_vlm.generate`
  command, can give another greedy answer than transformers (on a deliberately sensitive tiny model, from the 5th
  token), equal to transformers' own answer with its PIL backend.
- The config carries `text_config.rope_theta`: mlx-vlm reads only that key and otherwise assumes 1e6.
- The 4- and 8-bit variants load and answer; their agreement with transformers is measured in the tests.
- Video: mlx-vlm's SmolVLM processor treats video frames as separate images, without the frame timestamps
  transformers' processor writes into the prompt; video prompts were not compared.
"""


def write_mlx(hf_dir: Path, out: Path, say=None, bits: tuple[int, ...] = QUANT_BITS) -> None:
    """The merged fp32 folder converted by mlx-vlm: OUT (float32, the weights transformers runs) and OUT/q<b> for
    each of `bits` (text model and connector quantised, vision tower kept in float32 as mlx-vlm does)."""
    if importlib.util.find_spec("mlx_vlm") is None or importlib.util.find_spec("mlx") is None:
        raise UserError("--format mlx needs mlx and mlx-vlm", "pip install 'smolvlm-cli[mlx]'")
    bad = [b for b in bits if b not in (2, 3, 4, 5, 6, 8)]
    if bad:
        raise UserError(f"mlx quantisation to {bad[0]} bits is not supported", "use 4 or 8 bits")
    hf_dir, out = Path(hf_dir), Path(out)
    check_mlx_model(json.loads((hf_dir / "config.json").read_text()))
    jobs = [{"src": str(hf_dir), "dst": str(out), "bits": None, "group": GROUP_SIZE}]
    jobs += [{"src": str(hf_dir), "dst": str(out / f"q{b}"), "bits": b, "group": GROUP_SIZE} for b in bits]
    _convert(jobs)
    for job in jobs:
        folder = Path(job["dst"])
        carry_rope_theta(folder)
        (folder / "README.md").write_text(model_card(job["bits"], bits))
    if say is not None:
        say("mlx: float32 folder" + "".join(f", q{b}/ ({b}-bit)" for b in bits))

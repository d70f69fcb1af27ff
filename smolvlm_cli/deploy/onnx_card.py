# The README.md of an ONNX export: the files, how to run them (smolvlm, onnxruntime, transformers.js) and the
# agreement figures onnx_check measured on this very model at export time.
from __future__ import annotations

from pathlib import Path

RUN = """\
## Run it

With this project (onnxruntime, greedy, streamed; image or video prompts):

```bash
smolvlm generate --model {name} --image photo.jpg "What is in the image?"
smolvlm generate --model {name} --video clip.mp4 "What happens in the video?"
```

From Python with onnxruntime only (the loop `smolvlm generate` runs, in `smolvlm_cli/deploy/onnx_generate.py`):

```python
from smolvlm_cli.deploy.onnx_generate import load_onnx
from smolvlm_cli.generate import generate_answer
from PIL import Image

model, processor = load_onnx("{name}")            # fp32; load_onnx("{name}", "int8") or "q4" for the others
print(generate_answer(model, processor, "What is in the image?", [Image.open("photo.jpg")], max_new_tokens=64))
```

The graphs, for other runtimes:
- `embed_tokens`: `input_ids` [batch, seq] -> `inputs_embeds` [batch, seq, hidden]
- `vision_encoder`: `pixel_values` [batch, images, 3, H, W] float32 + `pixel_attention_mask` [batch, images, H, W]
  bool -> `image_features` [batch*images, image_seq_len, hidden]. Drop all-zero padding tiles first, then write the
  features over the `<image>` tokens' embeddings, in order.
- `decoder_model_merged`: `inputs_embeds`, `attention_mask` [batch, past+seq], `position_ids` [batch, seq],
  `past_key_values.N.key` / `.value` [batch, kv_heads, past, head_dim] (past = 0 on the first step) -> `logits`,
  `present.N.key` / `.value`.

transformers.js reads the same layout (`onnx/` + the processor files) as the released SmolVLM2 repositories, e.g.
`AutoModelForVision2Seq.from_pretrained(path, {{ dtype: {{ embed_tokens: "fp32", vision_encoder: "fp32",
decoder_model_merged: "q4" }} }})`; that path is not tested by this project.
"""


FOLDER = "path/to/this-folder"  # the export is written under a temporary name, then renamed


def _size(path: Path) -> str:
    mb = path.stat().st_size / 2**20
    return f"{mb:.1f} MiB" if mb >= 1 else f"{path.stat().st_size / 1024:.0f} KiB"


def verified(report: dict) -> str:
    fp32 = report["fp32"]
    lines = [
        f"Measured at export on the prompt \"{report['prompt']}\" with a fixed test picture "
        f"({report['prompt_tokens']} prompt tokens), onnxruntime on the CPU:",
        "",
        "| graphs | compared with | max logit gap | identical greedy tokens |",
        "|---|---|---|---|",
        f"| fp32 | transformers, first step (all prompt positions) | {fp32['max_logit_gap']:.2e} | "
        f"{fp32['same_tokens']} / {fp32['tokens']} (free-running) |",
    ]
    for variant in [k for k in report if k not in ("fp32", "prompt", "prompt_tokens")]:
        row = report[variant]
        lines.append(f"| {variant} | fp32 graphs, teacher-forced on the fp32 answer | {row['max_logit_gap']:.2e} | "
                     f"{row['same_tokens']} / {row['tokens']} |")
    return "\n".join(lines) + "\n"


def model_card(folder: Path, report: dict, seconds: float) -> str:
    files = sorted((folder / "onnx").glob("*.onnx"))
    listing = "\n".join(f"- `onnx/{f.name}` ({_size(f)})" for f in files)
    return (f"# SmolVLM, ONNX export\n\nSmolVLM exported by `smolvlm export --format onnx` in {seconds:.0f} s, "
            "adapters merged, in the three-graph split of the released SmolVLM2 `onnx/` folders: fp32, int8 "
            "(onnxruntime dynamic quantisation) and q4 (onnxruntime MatMulNBits, 4-bit blocks of 32) variants, "
            f"with the tokenizer, processor and config files beside them.\n\n{listing}\n\n"
            f"## Verified\n\n{verified(report)}\n{RUN.format(name=FOLDER)}")

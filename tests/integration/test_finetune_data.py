"""`--data` with recipes/finetune-lora.yaml on the tiny model (real DeepSpeed, CPU, 1 process): a JSONL, an image
folder with metadata.jsonl and a CSV mixed by row count; the loss falls, only the LoRA-adapted projections and the
connector change, the export loads in plain transformers; bad input stops with one line."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image as PILImage

from tests.integration.test_train import cli, losses

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
LORA = ROOT / "recipes" / "finetune-lora.yaml"
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20)}


def tiny_sets(steps: int) -> list[str]:
    phase = "stages.vision.phases.0"
    sets = [f"{phase}.steps={steps}", f"{phase}.global_batch_size=8", f"{phase}.micro_batch_size=4",
            f"{phase}.max_seq_len=256", f"{phase}.schedule.warmup_steps=1", f"{phase}.parts.text.lr=1.0e-2",
            f"{phase}.parts.connector.lr=1.0e-2", "train.checkpoint_every=100"]
    return [a for s in sets for a in ("--set", s)]


def colour_rows(folder: Path, n: int, media_key: str, prefix: str = "") -> list[dict]:
    rows = []
    for i in range(n):
        name = list(COLOURS)[i % len(COLOURS)]
        path = folder / f"{prefix}{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        PILImage.new("RGB", (32, 32), COLOURS[name]).save(path)
        rows.append({media_key: str(path.relative_to(folder)), "question": "What colour is it?", "answer": name})
    return rows


@pytest.fixture
def data(tmp_path) -> dict[str, Path]:
    """40 JSONL rows in the documented format, a 12-image folder with metadata.jsonl, an 8-row CSV."""
    jsonl = tmp_path / "jsonl" / "train.jsonl"
    rows = colour_rows(jsonl.parent, 40, "image", "img/")
    jsonl.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": [{"type": "image", "path": r["image"]}, {"type": "text", "text": r["question"]}]},
        {"role": "assistant", "content": r["answer"]}]}) + "\n" for r in rows))
    folder = tmp_path / "folder"
    (folder / "metadata.jsonl").parent.mkdir(parents=True)
    rows = colour_rows(folder, 12, "file_name")
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = tmp_path / "csv" / "train.csv"
    rows = colour_rows(table.parent, 8, "image", "pics/")
    with table.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "question", "answer"])
        writer.writeheader()
        writer.writerows(rows)
    return {"jsonl": jsonl, "folder": folder, "csv": table}


def test_lora_finetune_on_jsonl_folder_and_csv(tmp_path, tiny_model_dir, data):
    import torch
    from safetensors.torch import load_file

    run = tmp_path / "run"
    res = cli("train-vision", "--recipe", LORA, "--init", tiny_model_dir, "--out", run, *tiny_sets(12),
              "--data", data["jsonl"], "--data", data["folder"], "--data", data["csv"])
    assert res.returncode == 0, res.stderr[-3000:]
    recorded = (run / "recipe.yaml").read_text()
    assert "data0" in recorded and "data2" in recorded and "weight: 40" in recorded and "weight: 12" in recorded
    loss = losses(run)
    assert len(loss) == 12
    assert sum(loss[-3:]) / 3 < sum(loss[:3]) / 3 - 0.5, loss

    before = load_file(tiny_model_dir / "model.safetensors")
    after = load_file(next((run / "phases").glob("00-*")) / "model.safetensors")
    assert before.keys() == after.keys()  # adapters merged into the base weights
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    projections = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    assert any(k.startswith("model.connector.") for k in changed)
    assert any(k.startswith("model.text_model.layers.") for k in changed)
    assert all(any(f".{p}.weight" in k for p in projections) for k in changed
               if k.startswith("model.text_model.layers.") and "norm" not in k)
    # the project's lora mode also trains the adapted part's unwrapped parameters (the text model's norms)
    stray = [k for k in changed if not k.startswith(("model.connector.", "model.text_model.layers.",
                                                     "model.text_model.norm."))]
    assert not stray, stray  # vision tower, input embeddings and lm_head untouched

    export = tmp_path / "export"
    res = cli("export", run, "--out", export, "--dtype", "float32")
    assert res.returncode == 0, res.stderr[-2000:]
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(export)
    exported = model.state_dict()
    key = next(k for k in changed if k.startswith("model.connector."))
    assert torch.allclose(exported[key], after[key])
    assert not any("lora" in k for k in exported)


def test_bad_data_stops_with_one_line(tmp_path, tiny_model_dir, data):
    table = tmp_path / "bad.csv"
    table.write_text("image,question\ncsv/pics/0.png,What colour?\n")
    res = cli("train-vision", "--recipe", LORA, "--init", tiny_model_dir, "--out", tmp_path / "r", *tiny_sets(2),
              "--data", table)
    assert res.returncode == 2
    assert "lacks answer|response|messages" in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    res = cli("train-vision", "--recipe", LORA, "--init", tiny_model_dir, "--out", tmp_path / "r", *tiny_sets(2))
    assert res.returncode == 2 and "leaves the data of its vision stage to --data" in res.stderr, res.stderr

"""`smolvlm data check` on the tiny model (64 px tiles, 16 tokens per image): a missing image, a corrupt image and a
too-long sample are each reported by row; training skips and counts a sample whose image tokens max_seq_len would
cut, and never truncates it."""
from __future__ import annotations

import json
import re
from pathlib import Path

from PIL import Image as PILImage

ROOT = Path(__file__).resolve().parents[2]
LORA = ROOT / "recipes" / "finetune-lora.yaml"
TOKENS_PER_IMAGE = 16  # tiny recipe: (64 / 8)^2 / 2^2, one tile for any image up to 64 px


def _row(image: str, question: str, answer: str, text_first: bool = False) -> str:
    content = [{"type": "image", "path": image}, {"type": "text", "text": question}]
    return json.dumps({"messages": [{"role": "user", "content": content[::-1] if text_first else content},
                                    {"role": "assistant", "content": answer}]}) + "\n"


def write_rows(folder: Path) -> Path:
    """Rows 1 and 5 fine; row 2 names a missing image, row 3 a corrupt one, row 4 is far too long."""
    (folder / "img").mkdir(parents=True)
    PILImage.new("RGB", (32, 32), (220, 30, 30)).save(folder / "img" / "red.png")
    (folder / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image at all")
    path = folder / "train.jsonl"
    path.write_text(_row("img/red.png", "What colour is it?", "red")
                    + _row("img/gone.png", "What colour is it?", "red")
                    + _row("img/broken.png", "What colour is it?", "red")
                    + _row("img/red.png", "Describe it.", " ".join(["a long answer"] * 200))
                    + _row("img/red.png", "Which colour?", "red"))
    return path


def test_data_check_reports_each_bad_row(tmp_path, tiny_model_dir, cli):
    from smolvlm_cli.data.check import check_data

    path = write_rows(tmp_path)
    sets = ["stages.vision.phases.0.max_seq_len=200"]
    report = check_data(path, tiny_model_dir, LORA, overrides=sets)
    assert report["max_seq_len"] == 200
    verdicts = [(r.row, r.status, r.reason) for r in report["rows"]]
    assert verdicts == [(1, "ok", ""), (2, "skipped", "missing media"), (3, "skipped", "corrupt image"),
                        (4, "skipped", "too long"), (5, "ok", "")]
    rows = report["rows"]
    assert "gone.png" in rows[1].detail and "broken.png" in rows[2].detail
    assert [r.image_tokens for r in rows] == [TOKENS_PER_IMAGE, None, None, TOKENS_PER_IMAGE, TOKENS_PER_IMAGE]
    assert rows[3].tokens > 200 and rows[3].detail.startswith(f"{rows[3].tokens} tokens (16 image tokens)")
    assert rows[0].tokens < 200

    res = cli("data", "check", path, "--init", tiny_model_dir, "--recipe", LORA, *[a for s in sets for a in
                                                                                   ("--set", s)])
    assert res.exit_code == 1, res.output  # training would skip rows
    out = " ".join(res.output.split())
    assert "5 rows; usable 2, fitted 0, skipped 3 (max_seq_len 200)" in out
    assert "image tokens per sample: min 16, median 16, max 16" in out
    assert "skipped: missing media 1, corrupt image 1, too long 1" in out
    for row, reason in ((2, "missing media"), (3, "corrupt image"), (4, "too long")):
        assert re.search(rf"│\s+{row} │ skipped │ {reason}", res.output), res.output


def test_data_check_without_recipe_and_bad_settings(tmp_path, tiny_model_dir, cli):
    path = write_rows(tmp_path)
    res = cli("data", "check", path, "--init", tiny_model_dir, "--max-seq-len", "4096")
    assert res.exit_code == 1
    assert "5 rows; usable 3, fitted 0, skipped 2 (max_seq_len 4096)" in " ".join(res.output.split())
    bad = cli("data", "check", path, "--init", tiny_model_dir, "--set", "images.longest_edge=100")
    assert bad.exit_code == 2
    assert "longest_edge 100 is not a multiple of the tile 64" in " ".join(bad.output.split())


def test_sample_whose_image_would_be_cut_is_skipped_and_counted(tmp_path, tiny_model_dir):
    """max_seq_len falls inside the long sample's image: training skips that sample (counted under 'too long'),
    and every sample it keeps carries its image's 16 tokens whole."""
    from transformers import AutoProcessor

    from smolvlm_cli.data.encode import EncodeConfig, Encoder
    from smolvlm_cli.data.sources import load_source
    from smolvlm_cli.train.run import prepare
    from smolvlm_cli.train.stream import phase_stream

    (tmp_path / "img").mkdir()
    PILImage.new("RGB", (32, 32), (30, 30, 220)).save(tmp_path / "img" / "blue.png")
    long_row = _row("img/blue.png", " ".join(["tell me about this picture"] * 20), "blue", text_first=True)
    path = tmp_path / "train.jsonl"
    path.write_text(_row("img/blue.png", "What colour?", "blue") * 3 + long_row)

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    source = load_source(str(path))
    full = Encoder(processor, EncodeConfig(max_seq_len=10_000))(source.sample(3))
    image_at = (full.input_ids == processor.image_token_id).nonzero().flatten().tolist()
    assert len(image_at) == TOKENS_PER_IMAGE
    cut = image_at[TOKENS_PER_IMAGE // 2]  # a limit halfway through the image
    short = len(Encoder(processor, EncodeConfig(max_seq_len=10_000))(source.sample(0)))
    assert short < cut

    recipe = prepare(LORA, "vision", [f"stages.vision.phases.0.max_seq_len={cut}", "train.group_window=1",
                                      "stages.vision.phases.0.micro_batch_size=3",
                                      "stages.vision.phases.0.global_batch_size=3"], None, data=[path])
    stream = phase_stream(recipe, recipe.stages["vision"].phases[0], 0, processor)
    batches = iter(stream)
    for _ in range(3):
        batch = next(batches)
        assert batch["input_ids"].shape[1] <= cut
        per_row = (batch["input_ids"] == processor.image_token_id).sum(dim=1).tolist()
        assert per_row == [TOKENS_PER_IMAGE] * 3  # whole images only
    assert set(stream.skipped) == {"too long"}
    assert stream.skipped["too long"] == stream.seen - 9 >= 2  # every draw of row 4 was skipped, and counted

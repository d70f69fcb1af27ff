# Mirrors of synthetic splits in other datasets' schemas (The Cauldron's parquet, LLaVA's JSON), so the adapters for
# those schemas are exercised on built-in data. Written by synthetic.write_synthetic from its JSONL rows.
from __future__ import annotations

import json
from pathlib import Path


def _question_and_media(row: dict) -> tuple[str, list[dict], str]:
    user, assistant = row["messages"][0]["content"], row["messages"][1]["content"]
    if isinstance(user, str):
        return user, [], assistant
    return user[-1]["text"], user[:-1], assistant


def write_cauldron_mirror(out: Path, rows: list[dict]) -> None:
    """The colour train split in The Cauldron's schema: cauldron/colour/train.parquet (images + texts)."""
    from datasets import Dataset, Features, List, Value
    from datasets import Image as ImageFeature
    from datasets import utils as datasets_logging

    images, texts = [], []
    for row in rows:
        question, media, answer = _question_and_media(row)
        images.append([{"bytes": (out / "train" / m["path"]).read_bytes(), "path": None} for m in media])
        texts.append([{"user": question, "assistant": answer, "source": "synthetic_colour"}])
    features = Features(
        {
            "images": List(ImageFeature()),
            "texts": List({"user": Value("string"), "assistant": Value("string"), "source": Value("string")}),
        }
    )
    target = out / "cauldron" / "colour"
    target.mkdir(parents=True, exist_ok=True)
    dataset = Dataset.from_dict({"images": images, "texts": texts}, features=features)
    quiet = datasets_logging.are_progress_bars_disabled()
    datasets_logging.disable_progress_bars()  # a progress bar for a few hundred rows is noise
    try:
        dataset.to_parquet(str(target / "train.parquet"))
    finally:
        if not quiet:
            datasets_logging.enable_progress_bars()


def write_llava_mirror(out: Path, rows: list[dict]) -> None:
    """The direction train split in LLaVA's schema: llava/direction_train.json, videos relative to media/."""
    llava = []
    for row in rows:
        question, media, answer = _question_and_media(row)
        video = (out / "train" / media[0]["path"]).resolve().relative_to((out / "media").resolve()).as_posix()
        llava.append(
            {
                "id": row["id"],
                "video": video,
                "conversations": [
                    {"from": "human", "value": f"<video>\n{question}"},
                    {"from": "gpt", "value": answer},
                ],
            }
        )
    (out / "llava").mkdir(parents=True, exist_ok=True)
    text = "[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in llava) + "\n]\n"
    (out / "llava" / "direction_train.json").write_text(text, encoding="utf-8")

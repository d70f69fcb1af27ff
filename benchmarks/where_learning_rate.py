# Why the tiny recipe's text model trains at 3e-4: a bare PyTorch loop over the tiny model on the synthetic
# position question (which edge a shape sits at, chance 0.25) for each (vision and connector lr, text and embeddings
# lr) of the sweep and each seed. Prints held-out accuracy every --every steps. On 2 CPU cores the default sweep takes
# about 5 minutes; figures are in the README.
from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch

from smolvlm_cli.data.batching import collate
from smolvlm_cli.data.encode import EncodeConfig, Encoder
from smolvlm_cli.data.resolve import open_sources
from smolvlm_cli.data.sources import SourceSpec
from smolvlm_cli.recipe import SyntheticSettings, load_recipe
from smolvlm_cli.train.phases import part_of

ROOT = Path(__file__).resolve().parents[1]


def accuracy(model, test: list, pad: int) -> float:
    """Share of test items whose every answer token (and the end token) is the argmax: teacher-forced exact match."""
    model.eval()
    right = 0
    with torch.no_grad():
        for i in range(0, len(test), 20):
            batch = collate(test[i : i + 20], pad)
            labels = batch.pop("labels")[:, 1:]
            pred = model(**batch).logits[:, :-1].argmax(-1)
            right += int(((pred == labels) | (labels == -100)).all(-1).sum())
    model.train()
    return right / len(test)


def run(model_dir: Path, train: list, test: list, pad: int, lrs: tuple, seed: int, args) -> list:
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    tower_lr, text_lr = lrs
    lrs = {"vision": tower_lr, "connector": tower_lr, "text": text_lr, "embeddings": text_lr}
    groups: dict[str, list] = {}
    for name, p in model.named_parameters():
        groups.setdefault(part_of(name), []).append(p)
    opt = torch.optim.AdamW([{"params": ps, "lr": lrs[part]} for part, ps in groups.items()], weight_decay=0.0)
    model.train()
    scores = []
    for step in range(1, args.steps + 1):
        model(**collate(rng.sample(train, args.batch), pad)).loss.backward()
        opt.step()
        opt.zero_grad()
        if step % args.every == 0:
            scores.append(accuracy(model, test, pad))
    return scores


def main() -> None:
    from transformers import AutoProcessor

    from smolvlm_cli.assemble import init_model

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lrs", default="3e-3/3e-3,1e-3/1e-3,1e-3/3e-3,1e-3/3e-4",
                    help="comma-separated VISION_AND_CONNECTOR/TEXT learning rates")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp())
    init_model(load_recipe(ROOT / "recipes" / "tiny.yaml"), tmp / "tiny")
    processor = AutoProcessor.from_pretrained(tmp / "tiny")
    specs = {"train": SourceSpec(path="synthetic:position"),
             "test": SourceSpec(path="synthetic:position", split="test")}
    sources = open_sources(specs, list(specs), SyntheticSettings(), cache_dir=tmp)
    encoder = Encoder(processor, EncodeConfig(max_seq_len=512))
    train = [encoder(sources["train"].sample(i)) for i in range(len(sources["train"]))]
    test = [encoder(sources["test"].sample(i)) for i in range(len(sources["test"]))]
    print(f"position question, {len(train)} train / {len(test)} test items, batch {args.batch}; "
          f"held-out accuracy after every {args.every} steps")
    pad = processor.tokenizer.pad_token_id
    for pair in args.lrs.split(","):
        lrs = tuple(float(v) for v in pair.split("/"))
        for seed in (int(v) for v in args.seeds.split(",")):
            t0 = time.time()
            scores = run(tmp / "tiny", train, test, pad, lrs, seed, args)
            print(f"vision+connector lr {lrs[0]:g}, text lr {lrs[1]:g}, seed {seed}: "
                  f"{' '.join(f'{s:.2f}' for s in scores)}   ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()

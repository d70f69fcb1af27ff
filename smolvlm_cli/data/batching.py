# Batches from encoded samples: padding collate, length grouping, and packing several samples into one row
# with a block-diagonal causal mask and restarting positions (no attention across samples).
from __future__ import annotations

import random
from typing import Iterable, Iterator

from .encode import IGNORE, Encoded


def _images(rows: list[list[Encoded]]):
    """pixel_values [B, max_images, 3, H, W] (zero images are padding, dropped by the model) and its mask."""
    import torch

    per_row = [[e for e in row if e.pixel_values is not None] for row in rows]
    counts = [sum(e.pixel_values.shape[0] for e in row) for row in per_row]
    if not any(counts):
        return None, None
    tiles = [e.pixel_values for row in per_row for e in row]
    h, w = max(t.shape[-2] for t in tiles), max(t.shape[-1] for t in tiles)
    pixels = torch.zeros(len(rows), max(counts), 3, h, w, dtype=tiles[0].dtype)
    mask = torch.zeros(len(rows), max(counts), h, w, dtype=torch.bool)
    for b, row in enumerate(per_row):
        i = 0
        for e in row:
            n, ph, pw = e.pixel_values.shape[0], e.pixel_values.shape[-2], e.pixel_values.shape[-1]
            pixels[b, i: i + n, :, :ph, :pw] = e.pixel_values
            mask[b, i: i + n, :ph, :pw] = e.pixel_attention_mask
            i += n
    return pixels, mask


def collate(samples: list[Encoded], pad_id: int) -> dict:
    """Right-padded batch: input_ids, attention_mask, labels (-100 on padding), pixel_values if any."""
    import torch

    length = max(len(s) for s in samples)
    ids = torch.full((len(samples), length), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), length), IGNORE, dtype=torch.long)
    attn = torch.zeros((len(samples), length), dtype=torch.long)
    for i, s in enumerate(samples):
        ids[i, : len(s)] = s.input_ids
        labels[i, : len(s)] = s.labels
        attn[i, : len(s)] = 1
    batch = {"input_ids": ids, "attention_mask": attn, "labels": labels}
    pixels, mask = _images([[s] for s in samples])
    if pixels is not None:
        batch["pixel_values"], batch["pixel_attention_mask"] = pixels, mask
    return batch


def collate_packed(rows: list[list[Encoded]], pad_id: int, dtype=None) -> dict:
    """Each row holds several samples. The 4D float mask [B, 1, L, L] is causal within each sample and blocks
    attention across samples and to padding; position_ids restart at 0 for every sample.
    (Verified: with sdpa/eager, restarting position_ids alone does not isolate packed samples.)"""
    import torch

    dtype = dtype or torch.float32
    length = max(sum(len(s) for s in row) for row in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), length), IGNORE, dtype=torch.long)
    pos = torch.zeros((len(rows), length), dtype=torch.long)
    allowed = torch.zeros((len(rows), length, length), dtype=torch.bool)
    for b, row in enumerate(rows):
        start = 0
        for s in row:
            n = len(s)
            ids[b, start: start + n] = s.input_ids
            labels[b, start: start + n] = s.labels
            pos[b, start: start + n] = torch.arange(n)
            allowed[b, start: start + n, start: start + n] = torch.ones(n, n, dtype=torch.bool).tril()
            start += n
        # padding rows attend to themselves so no softmax row is empty (their outputs are ignored)
        idx = torch.arange(start, length)
        allowed[b, idx, idx] = True
    mask = torch.zeros((len(rows), 1, length, length), dtype=dtype)
    mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
    batch = {"input_ids": ids, "attention_mask": mask, "position_ids": pos, "labels": labels}
    pixels, pmask = _images(rows)
    if pixels is not None:
        batch["pixel_values"], batch["pixel_attention_mask"] = pixels, pmask
    return batch


def pack(samples: Iterable[Encoded], max_len: int) -> Iterator[list[Encoded]]:
    """Greedy first-fit over a window: fill a row up to max_len, keeping arrival order inside it."""
    row, used = [], 0
    for s in samples:
        if row and used + len(s) > max_len:
            yield row
            row, used = [], 0
        row.append(s)
        used += len(s)
    if row:
        yield row


def group_by_length(samples: Iterable[Encoded], batch_size: int, window: int = 64, seed: int = 0,
                    ) -> Iterator[list[Encoded]]:
    """Length-grouped batches: sort each window of `window * batch_size` samples by length, cut into batches and
    shuffle the batches (seeded), so padding is small and long/short batches are spread over training."""
    rng = random.Random(seed)
    buf: list[Encoded] = []
    for s in samples:
        buf.append(s)
        if len(buf) == window * batch_size:
            yield from _grouped(buf, batch_size, rng)
            buf = []
    if buf:
        yield from _grouped(buf, batch_size, rng)


def _grouped(buf: list[Encoded], batch_size: int, rng: random.Random) -> Iterator[list[Encoded]]:
    buf = sorted(buf, key=len)
    batches = [buf[i: i + batch_size] for i in range(0, len(buf), batch_size)]
    rng.shuffle(batches)
    yield from batches


def real_token_fraction(batches: Iterable[list[list[Encoded]]]) -> float:
    """Share of real (non-padding) positions over all positions; a batch is a list of rows, a row a list of samples
    (one sample per row without packing)."""
    real = total = 0
    for rows in batches:
        lengths = [sum(len(s) for s in row) for row in rows]
        real += sum(lengths)
        total += len(rows) * max(lengths)
    return real / total if total else 0.0


def add_blank_image(batch: dict, image_token_id: int, image_seq_len: int, tile: int, pad_id: int) -> dict:
    """Give an image-free batch one blank image, placed in `image_seq_len` extra positions at the end of row 0
    that nothing attends to and no label supervises. The logits of the real tokens and the loss are unchanged,
    but the vision tower runs: under ZeRO-3 every rank must run the same modules in the same order."""
    import torch

    if "pixel_values" in batch:
        return batch
    ids = batch["input_ids"]
    b, length = ids.shape
    n = image_seq_len
    out = dict(batch)
    out["input_ids"] = torch.cat([ids, torch.full((b, n), pad_id, dtype=ids.dtype)], dim=1)
    out["input_ids"][0, length:] = image_token_id
    out["labels"] = torch.cat([batch["labels"], torch.full((b, n), IGNORE, dtype=batch["labels"].dtype)], dim=1)
    mask = batch["attention_mask"]
    if mask.dim() == 2:
        out["attention_mask"] = torch.cat([mask, torch.zeros((b, n), dtype=mask.dtype)], dim=1)
    else:  # packed: the blank block only attends to itself
        big = torch.full((b, 1, length + n, length + n), torch.finfo(mask.dtype).min, dtype=mask.dtype)
        big[:, :, :length, :length] = mask
        idx = torch.arange(length, length + n)
        big[:, :, idx, idx] = 0
        out["attention_mask"] = big
        out["position_ids"] = torch.cat([batch["position_ids"], torch.arange(n).expand(b, n)], dim=1)
    out["pixel_values"] = torch.zeros((b, 1, 3, tile, tile))
    out["pixel_attention_mask"] = torch.ones((b, 1, tile, tile), dtype=torch.bool)
    return out

# Peak memory and time of the training loss at the 256M recipe's shapes (hidden 576, vocab 49,280), micro batch
# 4 x 2048 tokens with 10% of the positions supervised: the full-vocabulary loss the trainer used to compute
# (`dense_loss_sum` on (B, T, vocab) logits) against the lean one it computes now (`supervised_loss_sum`: the head
# projects the supervised positions only). Forward + backward of the head and the loss, from final hidden states
# that require grad. Each variant runs in its own process: peak = the process's maximum resident memory (on a GPU,
# torch's peak allocation) minus what it held once the inputs existed.
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from types import SimpleNamespace

import psutil


def inputs(batch: int, seq: int, hidden: int, vocab: int, supervised: float, device: str, dtype):
    import torch

    g = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(hidden, vocab, bias=False).to(device, dtype)
    h = torch.randn(batch, seq, hidden, generator=g).to(device, dtype).requires_grad_()
    labels = torch.full((batch, seq), -100, dtype=torch.long)
    for row in labels:  # one answer span per row at a random place: supervised share of the positions
        n = int(seq * supervised)
        start = int(torch.randint(1, seq - n, (1,), generator=g))
        row[start: start + n] = torch.randint(0, vocab, (n,), generator=g)
    return head, h, labels.to(device)


class _HeadOnly:
    """The last step of the model's forward (hidden states -> head -> logits), with the model's interface."""

    def __init__(self, head):
        self.head = head

    def get_output_embeddings(self):
        return self.head

    def __call__(self, hidden, use_cache=False):
        return SimpleNamespace(logits=self.head(hidden))


def one_variant(args) -> dict:
    import torch

    from smolvlm_cli.train.loss import dense_loss_sum, supervised_loss_sum

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    head, h, labels = inputs(args.batch, args.seq, args.hidden, args.vocab, args.supervised, device, dtype)
    model = _HeadOnly(head)

    def step():
        if args.variant == "dense":
            loss = dense_loss_sum(model(h).logits, labels)
        else:
            loss = supervised_loss_sum(model, {"hidden": h}, labels)
        loss.backward()
        h.grad = head.weight.grad = None
        return float(loss)

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = psutil.Process().memory_info().rss
    times, losses = [], []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        losses.append(step())
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"variant": args.variant, "device": device, "peak_mb": peak / 2**20, "seconds": statistics.median(times),
            "loss": losses[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--hidden", type=int, default=576)
    parser.add_argument("--vocab", type=int, default=49280)
    parser.add_argument("--supervised", type=float, default=0.1)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--variant", choices=["dense", "lean"], help="run one variant in this process")
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(one_variant(args)))
        return
    rows = {}
    for variant in ("dense", "lean"):
        cmd = [sys.executable, __file__, "--variant", variant] + [
            f"--{k}={getattr(args, k)}" for k in ("batch", "seq", "hidden", "vocab", "supervised", "reps")]
        rows[variant] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    d, lean = rows["dense"], rows["lean"]
    print(f"{args.batch} x {args.seq} tokens, {args.supervised:.0%} supervised, hidden {args.hidden}, vocab "
          f"{args.vocab}, {d['device']}")
    print("| loss path | peak memory | time (fwd + bwd, median) | loss |")
    for r in (d, lean):
        print(f"| {r['variant']} | {r['peak_mb']:,.0f} MB | {r['seconds'] * 1000:,.0f} ms | {r['loss']:.4f} |")
    print(f"lean: {d['peak_mb'] / lean['peak_mb']:.1f}x less peak memory, {d['seconds'] / lean['seconds']:.1f}x "
          f"the speed; losses differ by {abs(d['loss'] - lean['loss']) / d['loss']:.1e} (relative)")


if __name__ == "__main__":
    main()

# The training loss: next-token cross-entropy summed over the supervised positions only. The language head projects
# just the positions whose next token carries a label, so full-vocabulary logits (49,280 wide at SmolVLM's sizes)
# never exist for image, prompt or padding positions: peak memory of the loss falls with the supervised share.
from __future__ import annotations

import contextlib


def supervised_positions(labels):
    """(B, T) bool: the positions whose next token is supervised (the last position predicts nothing), and the
    targets of those positions in the same row-major order."""
    import torch

    nxt = labels[:, 1:]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = nxt != -100
    return keep, nxt[nxt != -100]


@contextlib.contextmanager
def head_on(model, keep):
    """While inside, the model's language head sees only the hidden states at `keep` ((B, T) bool), flattened to
    (N, hidden): its `logits` output is (N, vocab). A forward pre-hook (public torch API, any transformers 5.x):
    under ZeRO-3 it runs after DeepSpeed's own hooks have gathered the head's weight."""
    head = model.get_output_embeddings()
    handle = head.register_forward_pre_hook(lambda module, args: (args[0][keep],) + tuple(args[1:]))
    try:
        yield
    finally:
        handle.remove()


def supervised_loss_sum(model, batch: dict, labels):
    """Forward `batch` through `model` (a DeepSpeed engine or the bare model) and return the fp32 sum of
    cross-entropy over the supervised next tokens: equal to `dense_loss_sum` on the full logits."""
    import torch.nn.functional as F

    keep, targets = supervised_positions(labels)
    inner = getattr(model, "module", model)
    with head_on(inner, keep):
        logits = model(**batch, use_cache=False).logits
    return F.cross_entropy(logits.float(), targets, reduction="sum")


def dense_loss_sum(logits, labels):
    """The same sum from full (B, T, vocab) logits: the reference the lean path is tested and benchmarked against."""
    import torch.nn.functional as F

    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100,
                           reduction="sum")

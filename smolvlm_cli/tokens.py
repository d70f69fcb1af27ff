# SmolVLM's special tokens (released ids and order) and the built-in tokenizer for random text parts.
# The built-in tokenizer is a byte-level BPE trained at init time on text shipped here: nothing is downloaded.
from __future__ import annotations

import itertools

IMAGE_TOKEN = "<image>"
FAKE_IMAGE_TOKEN = "<fake_token_around_image>"
GLOBAL_IMAGE_TOKEN = "<global-img>"
END_OF_UTTERANCE = "<end_of_utterance>"
N_RESERVED = 88
BASE_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # SmolLM2's ids 0, 1, 2


def smolvlm_special_tokens() -> list[str]:
    """The 128 tokens SmolVLM2 appends to SmolLM2's vocabulary, in their released order (ids 49152..49279)."""
    rows = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    reserved = [f"<|reserved_special_token_{i}|>" for i in range(N_RESERVED)]
    return [GLOBAL_IMAGE_TOKEN, *rows, FAKE_IMAGE_TOKEN, IMAGE_TOKEN, *reserved, END_OF_UTTERANCE]


def padded_vocab_size(n_tokens: int, multiple: int) -> int:
    return -(-n_tokens // multiple) * multiple


def add_smolvlm_tokens(tokenizer) -> list[int]:
    """Append the SmolVLM tokens after the LM's vocabulary and make `<end_of_utterance>` the eos.

    Returns their ids. Refuses a tokenizer that already has some of them (it is not a plain LM tokenizer)."""
    from tokenizers import AddedToken

    tokens = smolvlm_special_tokens()
    vocab = tokenizer.get_vocab()
    present = [t for t in tokens if t in vocab]
    if present:
        from .errors import PartError

        raise PartError(
            f"the text part's tokenizer already contains SmolVLM tokens ({present[0]}, ...)",
            "pass the plain language model (e.g. SmolLM2-135M-Instruct), not a SmolVLM",
        )
    start = len(tokenizer)
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in tokens], special_tokens=True)
    ids = tokenizer.convert_tokens_to_ids(tokens)
    assert ids == list(range(start, start + len(tokens))), "special tokens were not appended in order"
    tokenizer.eos_token = END_OF_UTTERANCE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = "<|im_end|>" if "<|im_end|>" in vocab else END_OF_UTTERANCE
    return ids


# Words of the built-in synthetic tasks and the chat/video prompts, so the tiny tokenizer splits them well.
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
SHAPES = ["circle", "square", "triangle", "star"]
DIRECTIONS = ["left", "right", "up", "down"]
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
_PROMPTS = [
    "User: What colour is the {s}? Answer with one word.",
    "Assistant: {c}.",
    "How many {s}s are there? Answer with a number.",
    "Which direction does the {c} {s} move?",
    "What word is written in the image?",
    "What is the value of bar {n} in the chart?",
    "Are the two images the same colour? Answer yes or no.",
    "Which colour appears first in the video?",
    "You are provided the following series of {w} frames from a 0:00:0{n} [H:MM:SS] video.",
    "Frame from 00:0{n}:",
    "Answer the question using a single word or phrase.",
    "Answer with the option's letter from the given choices directly.",
    "A. {c} B. {s} C. {w} D. {n}",
    "The {c} {s} is on the {d} of the image.",
    "Describe the image. There is a {c} {s} moving {d}.",
]


def builtin_corpus() -> list[str]:
    lines = []
    for tpl, c, s, d, n in itertools.product(_PROMPTS, COLOURS, SHAPES, DIRECTIONS, range(10)):
        lines.append(tpl.format(c=c, s=s, d=d, n=n, w=NUMBER_WORDS[n]))
    return lines


def build_builtin_tokenizer(vocab_size: int):
    """A small byte-level BPE (SmolLM2's special tokens at ids 0-2) as a transformers fast tokenizer.

    Deterministic: the same vocab_size always gives the same vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=BASE_SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(builtin_corpus(), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|im_end|>",
    )

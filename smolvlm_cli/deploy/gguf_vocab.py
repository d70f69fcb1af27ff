# The tokenizer part of a GGUF text model: the byte-level BPE vocabulary, its merges, special ids and chat template,
# written the way llama.cpp's converter writes a GPT-2-style ("gpt2" model) vocabulary.
from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError


def _byte_level(pre: dict | None) -> bool:
    return bool(pre) and pre.get("type") == "ByteLevel" and pre.get("use_regex", True) \
        and not pre.get("add_prefix_space", False)


def _digits_then_byte_level(pre: dict | None) -> bool:
    if not pre or pre.get("type") != "Sequence" or len(pre.get("pretokenizers", [])) != 2:
        return False
    digits, byte_level = pre["pretokenizers"]
    return digits.get("type") == "Digits" and digits.get("individual_digits") is True and _byte_level(byte_level)


def _digit_merges(vocab: dict[str, int]) -> bool:
    """True when some token joins a number character (Unicode category N, the regex's \\p{N}) to anything else,
    judged on the token's text (byte-level tokens are bytes spelled as characters)."""
    import unicodedata

    from gguf.vocab import bytes_to_unicode

    to_byte = {c: b for b, c in bytes_to_unicode().items()}
    for token in vocab:
        if not all(c in to_byte for c in token):
            continue
        text = bytes(to_byte[c] for c in token).decode("utf-8", errors="replace")
        if len(text) > 1 and any(unicodedata.category(c).startswith("N") for c in text):
            return True
    return False


def pre_tokenizer_name(tokenizer_json: dict) -> str:
    """llama.cpp's name for the pre-tokenizer that splits text exactly as tokenizer.json does.
    'smollm' is GPT-2's byte-level regex after putting every digit on its own ('gpt2' is the regex alone). A plain
    ByteLevel pre-tokenizer over a vocabulary with no token joining a digit to anything tokenizes identically
    either way; such a vocabulary (SmolLM2's) is labelled 'smollm', as llama.cpp's converter labels it."""
    pre = tokenizer_json.get("pre_tokenizer")
    if _digits_then_byte_level(pre):
        return "smollm"
    if _byte_level(pre):
        return "gpt2" if _digit_merges(tokenizer_json["model"]["vocab"]) else "smollm"
    raise UserError(f"the tokenizer's pre-tokenizer {json.dumps(pre)[:80]} has no llama.cpp equivalent known here",
                    "export --format gguf supports byte-level BPE tokenizers (SmolLM2's); use --format hf")


def _looks_special(token: str) -> bool:
    return token.startswith("<|") and token.endswith("|>")


def vocab_lists(tokenizer, vocab_size: int) -> tuple[list[str], list[int]]:
    """Every id below vocab_size with its llama.cpp token type; ids the tokenizer lacks become unused [PADn]."""
    import gguf

    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    if max(by_id) >= vocab_size:
        raise UserError(f"the tokenizer has id {max(by_id)} but the model's vocabulary is {vocab_size}",
                        "resize the token embeddings to the tokenizer (smolvlm init does) and export again")
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        token = by_id.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        if i in added:
            if not added[i].normalized:  # llama.cpp expects added tokens in their normalized form
                token = tokenizer.decode(tokenizer.encode(token, add_special_tokens=False))
            if added[i].special or _looks_special(token):
                types.append(gguf.TokenType.CONTROL)
            else:
                token = token.replace("\u2581", " ")
                types.append(gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
        tokens.append(token)
    return tokens, types


def add_tokenizer(writer, hf_dir: Path, vocab_size: int) -> str:
    """Writes the vocabulary, merges, special token ids and chat template; returns the pre-tokenizer name."""
    import gguf
    from transformers import AutoTokenizer

    path = hf_dir / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"'{path}' not found", "export --format gguf needs the model's fast tokenizer (tokenizer.json)")
    spec = json.loads(path.read_text(encoding="utf-8"))
    if spec.get("model", {}).get("type") != "BPE":
        raise UserError(f"the tokenizer is {spec.get('model', {}).get('type')}, not byte-level BPE",
                        "export --format gguf supports byte-level BPE tokenizers (SmolLM2's); use --format hf")
    pre = pre_tokenizer_name(spec)
    tokens, types = vocab_lists(AutoTokenizer.from_pretrained(hf_dir), vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(hf_dir, load_merges=True)
    if not special.merges:
        raise UserError(f"no BPE merges found in '{path}'", "export the tokenizer with transformers and try again")
    special.add_to_gguf(writer, quiet=True)
    return pre

from smolvlm_cli.tokens import (
    add_smolvlm_tokens, build_builtin_tokenizer, padded_vocab_size, smolvlm_special_tokens,
)


def test_special_tokens_released_order():
    toks = smolvlm_special_tokens()
    assert len(toks) == 128
    # ids relative to SmolLM2's 49152-token vocabulary, as released
    ids = {t: 49152 + i for i, t in enumerate(toks)}
    assert ids["<global-img>"] == 49152
    assert ids["<row_1_col_1>"] == 49153 and ids["<row_2_col_3>"] == 49153 + 6 * 1 + 2 and ids["<row_6_col_6>"] == 49188
    assert ids["<fake_token_around_image>"] == 49189
    assert ids["<image>"] == 49190
    assert ids["<end_of_utterance>"] == 49279
    assert sum(t.startswith("<|reserved_special_token_") for t in toks) == 49278 - 49191 + 1


def test_padded_vocab_size():
    assert padded_vocab_size(49280, 128) == 49280
    assert padded_vocab_size(49281, 128) == 49408
    assert padded_vocab_size(668, 128) == 768


def test_builtin_tokenizer_is_deterministic_and_gets_smolvlm_tokens():
    a, b = build_builtin_tokenizer(1024), build_builtin_tokenizer(1024)
    assert a.get_vocab() == b.get_vocab()
    assert a.convert_ids_to_tokens([0, 1, 2]) == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    n = len(a)
    ids = add_smolvlm_tokens(a)
    assert ids == list(range(n, n + 128))
    assert a.eos_token == "<end_of_utterance>" and a.pad_token == "<|im_end|>"
    text = "<|im_start|>User:<image>What colour is the circle?<end_of_utterance>"
    enc = a(text, add_special_tokens=False)["input_ids"]
    assert enc[0] == 1 and enc.count(n + 38) == 1 and enc[-1] == n + 127  # <im_start>, <image>, <end_of_utterance>
    assert a.decode(enc) == text


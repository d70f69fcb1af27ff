"""Encoding (answer-only labels, media through SmolVLMProcessor, token budget) and batching (padding, grouping,
packing equivalence) on the tiny model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from smolvlm_cli.data.batching import collate, collate_packed, group_by_length, pack, real_token_fraction
from smolvlm_cli.data.encode import IGNORE, EncodeConfig, Encoder
from smolvlm_cli.data.sample import Image, Sample, SampleError, Text, Turn, Video


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    """The tiny recipe's processor with a 128 px longest edge: images split into up to 2x2 tiles + global. Same seed
    and tokenizer as `tiny_model_dir`, so its ids fit the `model` fixture."""
    from transformers import AutoProcessor

    from smolvlm_cli.assemble import init_model
    from smolvlm_cli.recipe import load_recipe
    from tests.conftest import TINY_RECIPE

    out = tmp_path_factory.mktemp("tiny-split") / "model"
    init_model(load_recipe(TINY_RECIPE, ["model.processor.longest_edge=128"]), out)
    return AutoProcessor.from_pretrained(out)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


def _img(seed, size=(64, 64)):
    from PIL import Image as PILImage

    return PILImage.fromarray(np.random.RandomState(seed).randint(0, 255, (*size, 3), dtype=np.uint8))


def _mp4(path, seconds, fps=4, size=32):
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(int(seconds * fps)):
            frame = np.full((size, size, 3), (i * 20) % 255, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _chat(*turns):
    return Sample("s", "test", [Turn(role, parts) for role, parts in turns])


def test_labels_cover_exactly_the_assistant_answers(processor):
    tok = processor.tokenizer
    sample = _chat(("system", [Text("Be brief.")]),
                   ("user", [Image(pil=_img(0)), Text("What colour?")]), ("assistant", [Text("red")]),
                   ("user", [Text("Sure?")]), ("assistant", [Text("yes it is")]))
    enc = Encoder(processor, EncodeConfig(max_seq_len=1024))(sample)
    eou = tok.convert_tokens_to_ids("<end_of_utterance>")
    first = tok(" red", add_special_tokens=False)["input_ids"] + [eou]
    answer_ids = first + tok(" yes it is", add_special_tokens=False)["input_ids"] + [eou]
    supervised = (enc.labels != IGNORE).nonzero().flatten().tolist()
    assert enc.labels[supervised].tolist() == answer_ids
    assert torch.equal(enc.labels[supervised], enc.input_ids[supervised])
    # each answer starts right after "Assistant:" and ends on <end_of_utterance>
    text = tok.decode(enc.input_ids[: supervised[0]])
    assert text.endswith("<end_of_utterance>\nAssistant:")
    assert enc.input_ids[supervised[len(first) - 1]] == eou
    second = supervised[len(first)]
    between = tok.decode(enc.input_ids[supervised[len(first) - 1] + 1: second])
    assert between == "\nUser: Sure?<end_of_utterance>\nAssistant:"
    # the system turn, the user turns, every media token and the turn separators stay unsupervised
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert (enc.labels[enc.input_ids == image_id] == IGNORE).all()
    assert enc.n_supervised == len(answer_ids)


def test_encoding_equals_processor_on_the_whole_conversation(processor):
    images = [_img(1, (100, 60)), _img(2)]
    sample = _chat(("user", [Image(pil=images[0]), Image(pil=images[1]), Text("Same colour?")]),
                   ("assistant", [Text("no")]))
    enc = Encoder(processor, EncodeConfig(max_seq_len=4096))(sample)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                             {"type": "text", "text": "Same colour?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "no"}]}]
    text = processor.apply_chat_template(messages)
    ref = processor(text=[text], images=[images], add_special_tokens=False, return_tensors="pt")
    assert torch.equal(enc.input_ids, ref["input_ids"][0])
    assert torch.equal(enc.pixel_values, ref["pixel_values"][0])
    assert enc.modality == "multi-image"


def test_video_frames_at_1fps_with_timestamps(processor, tmp_path):
    video = _mp4(tmp_path / "v.mp4", seconds=3)
    sample = _chat(("user", [Video(str(video)), Text("Which colour first?")]), ("assistant", [Text("black")]))
    enc = Encoder(processor, EncodeConfig(max_seq_len=4096, video_fps=1.0, video_max_frames=8))(sample)
    assert enc.pixel_values.shape[0] == 3 and enc.modality == "video"
    text = processor.tokenizer.decode(enc.input_ids)
    assert "series of three frames from a 0:00:03 [H:MM:SS] video" in text
    assert [text.count(f"Frame from 00:0{s}:") for s in range(4)] == [1, 1, 1, 0]


def test_token_budget_uses_fewer_frames_then_fewer_tiles_then_skips(processor, tmp_path):
    video = _mp4(tmp_path / "v.mp4", seconds=8)
    vsample = _chat(("user", [Video(str(video)), Text("Q?")]), ("assistant", [Text("a")]))
    full = Encoder(processor, EncodeConfig(max_seq_len=4096, video_max_frames=8))(vsample)
    assert full.pixel_values.shape[0] == 8 and full.fitted is None
    fitted = Encoder(processor, EncodeConfig(max_seq_len=len(full) - 1, video_max_frames=8))(vsample)
    assert fitted.pixel_values.shape[0] == 4 and fitted.fitted == "fewer frames"

    isample = _chat(("user", [Image(pil=_img(3)), Text("Q?")]), ("assistant", [Text("a")]))
    tiles = Encoder(processor, EncodeConfig(max_seq_len=4096))(isample)
    assert tiles.pixel_values.shape[0] == 5  # 2x2 tiles + global image
    one = Encoder(processor, EncodeConfig(max_seq_len=len(tiles) - 1))(isample)
    assert one.pixel_values.shape[0] == 1 and one.fitted == "no image splitting"
    with pytest.raises(SampleError) as err:
        Encoder(processor, EncodeConfig(max_seq_len=10))(isample)
    assert err.value.reason == "too long"


@pytest.mark.parametrize("make_part,reason", [
    (lambda tmp: Image(path=str(tmp / "missing.png")), "missing media"),
    (lambda tmp: Image(data=b"not an image"), "corrupt image"),
    (lambda tmp: Video(str(tmp / "missing.mp4")), "missing media"),
    (lambda tmp: Video(str((tmp / "bad.mp4").write_bytes(b"\x00" * 100) and tmp / "bad.mp4")), "corrupt video"),
])
def test_bad_media_raise_sample_errors(processor, tmp_path, make_part, reason):
    sample = _chat(("user", [make_part(tmp_path), Text("Q?")]), ("assistant", [Text("a")]))
    with pytest.raises(SampleError) as err:
        Encoder(processor, EncodeConfig(max_seq_len=4096))(sample)
    assert err.value.reason == reason


def _samples(processor):
    enc = Encoder(processor, EncodeConfig(max_seq_len=4096))
    return [
        enc(_chat(("user", [Image(pil=_img(4)), Text("What colour is it?")]), ("assistant", [Text("blue")]))),
        enc(_chat(("user", [Text("What is 3 plus 4?")]), ("assistant", [Text("7")]),
                  ("user", [Text("And 2 plus 2?")]), ("assistant", [Text("4")]))),
        enc(_chat(("user", [Image(pil=_img(5, (40, 64))), Text("Count?")]), ("assistant", [Text("three")]))),
    ]


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_packed_loss_equals_token_weighted_mean_of_single_losses(model, processor, attn):
    model.set_attn_implementation(attn)
    samples = _samples(processor)
    pad = processor.tokenizer.pad_token_id
    with torch.no_grad():
        single = [model(**collate([s], pad)).loss.item() for s in samples]
        packed = model(**collate_packed([samples], pad)).loss.item()
    weights = [s.n_supervised for s in samples]  # every supervised label is one predicted position
    expected = sum(loss * w for loss, w in zip(single, weights)) / sum(weights)
    assert abs(packed - expected) < 1e-5


def test_packed_logits_equal_separate_runs(model, processor):
    model.set_attn_implementation("sdpa")
    samples = _samples(processor)
    pad = processor.tokenizer.pad_token_id
    with torch.no_grad():
        packed = model(**collate_packed([samples], pad)).logits[0]
        start = 0
        for s in samples:
            alone = model(**collate([s], pad)).logits[0]
            assert (packed[start: start + len(s)] - alone).abs().max().item() < 1e-4
            start += len(s)


def test_padding_collate_shapes_and_labels(processor):
    samples = _samples(processor)
    pad = processor.tokenizer.pad_token_id
    batch = collate(samples, pad)
    longest = max(len(s) for s in samples)
    assert batch["input_ids"].shape == (3, longest)
    assert batch["pixel_values"].shape == (3, 5, 3, 64, 64)  # the text-only row gets zero (dropped) images
    assert batch["pixel_values"][1].abs().sum() == 0
    for i, s in enumerate(samples):
        assert batch["attention_mask"][i].sum() == len(s)
        assert (batch["labels"][i, len(s):] == IGNORE).all()
        assert (batch["input_ids"][i, len(s):] == pad).all()


def test_grouping_and_packing_raise_real_token_share(processor):
    rng = np.random.RandomState(0)
    items = [_Len(int(n)) for n in rng.randint(20, 400, size=512)]
    plain = [[[s] for s in items[i: i + 8]] for i in range(0, len(items), 8)]
    grouped = [[[s] for s in b] for b in group_by_length(items, batch_size=8, window=64, seed=0)]
    packed = [[row] for row in pack(sorted(items, key=len, reverse=True), max_len=1024)]
    assert real_token_fraction(grouped) > 0.95 > real_token_fraction(plain)
    assert real_token_fraction(packed) > 0.95
    # grouping is a deterministic permutation of the input
    again = [[s] for b in group_by_length(items, batch_size=8, window=64, seed=0) for s in b]
    assert [r[0] for b in grouped for r in b] == [r[0] for r in again]
    assert sorted(map(id, (r[0] for b in grouped for r in b))) == sorted(map(id, items))


class _Len:
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n


@pytest.mark.parametrize("packed", [False, True])
def test_blank_image_changes_no_logit_and_no_loss(model, processor, packed):
    """Text-only batches get a blank image (ZeRO-3 ranks must all run the vision tower); nothing else changes."""
    from smolvlm_cli.data.batching import add_blank_image

    model.set_attn_implementation("sdpa")
    samples = _samples(processor)[1:2] * 2  # text-only
    pad = processor.tokenizer.pad_token_id
    batch = collate_packed([samples], pad) if packed else collate(samples, pad)
    length = batch["input_ids"].shape[1]
    blank = add_blank_image(batch, model.config.image_token_id, 16, 64, pad)
    assert blank["input_ids"].shape[1] == length + 16 and blank["pixel_values"].shape[-1] == 64
    assert int((blank["input_ids"] == model.config.image_token_id).sum()) == 16
    with torch.no_grad():
        ref = model(**batch)
        out = model(**blank)
    assert (out.logits[:, :length] - ref.logits).abs().max().item() < 1e-5
    assert abs(out.loss.item() - ref.loss.item()) < 1e-6

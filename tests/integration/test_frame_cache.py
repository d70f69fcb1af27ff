# The frame cache on the tiny model: encoded batches from cached frames equal the decoded ones to the bit, a changed
# frame cap misses, the token budget never decodes twice, `smolvlm data cache` end to end, and one frame cap shared
# by training, eval and `smolvlm generate`.
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from smolvlm_cli.data import frame_cache as fc
from smolvlm_cli.data.encode import EncodeConfig, Encoder
from smolvlm_cli.data.sample import Sample, Text, Turn, Video
from smolvlm_cli.data.video import VideoSampling, video_sampling
from tests.conftest import TINY_RECIPE


def write_mp4(path, seconds=10, fps=4, size=(96, 128)):
    """Frames larger than the tiny processor's 64 px frame edge (so the cache stores them shrunk), each different."""
    from smolvlm_cli.data.synthetic import write_mp4 as encode

    h, w = size
    x, y = np.arange(w)[None, :], np.arange(h)[:, None]
    frames = [np.stack(np.broadcast_arrays((x * 2 + 9 * t) % 256, (y * 2 + 5 * t) % 256, 6 * t % 256), -1)
              for t in range(seconds * fps)]
    encode(path, np.stack(frames).astype(np.uint8), fps)
    return path


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model_dir)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SMOLVLM_CACHE", str(tmp_path / "smolvlm-cache"))
    return fc.default_cache_dir()


@pytest.fixture
def decodes(monkeypatch):
    """Paths decoded, in order (every decode of the cache module and the encoder goes through fc.decode)."""
    calls = []
    real = fc.decode
    monkeypatch.setattr(fc, "decode", lambda path, *a, **k: calls.append(str(path)) or real(path, *a, **k))
    return calls


def chat(*videos):
    parts = [Video(str(v)) for v in videos]
    return Sample("s", "test", [Turn("user", [*parts, Text("Which way?")]), Turn("assistant", [Text("left")])])


def test_training_on_cached_frames_gives_the_same_batches(processor, tmp_path, cache, decodes):
    clips = [write_mp4(tmp_path / "a.mp4"), write_mp4(tmp_path / "b.mp4", seconds=3, size=(128, 72))]
    sampling = video_sampling(processor, 1.0, 8)
    report = fc.build_cache({str(c): [sampling] for c in clips}, cache)
    assert (report["videos"], report["corrupt"]) == (2, {})
    stored = fc.read_entry(fc.entry_path(cache, fc.entry_key(clips[0], sampling)))
    assert stored.frames.shape == (8, 48, 64, 3) and (stored.width, stored.height) == (128, 96)  # shrunk as stored
    decodes.clear()
    fitted = []
    for max_seq_len in (4096, 200):  # 200: the budget takes fewer frames of the 10 s clip
        fresh = Encoder(processor, EncodeConfig(max_seq_len=max_seq_len, frame_cache=False))
        cached = Encoder(processor, EncodeConfig(max_seq_len=max_seq_len, frame_cache=str(cache)))
        for clip in clips:
            a, b = fresh(chat(clip)), cached(chat(clip))
            assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)
            assert torch.equal(a.pixel_values, b.pixel_values)
            assert torch.equal(a.pixel_attention_mask, b.pixel_attention_mask) and a.fitted == b.fitted
            fitted.append((a.fitted, a.pixel_values.shape[0]))
    assert fitted == [(None, 8), (None, 3), ("fewer frames", 4), (None, 3)]
    assert decodes == [str(clips[0]), str(clips[1])] * 2  # the fresh encoder's only: one decode per sample


def test_the_token_budget_takes_fewer_frames_from_the_one_decode(processor, tmp_path, decodes):
    clip = write_mp4(tmp_path / "a.mp4")
    full = Encoder(processor, EncodeConfig(max_seq_len=4096, frame_cache=False))(chat(clip))
    fitted = Encoder(processor, EncodeConfig(max_seq_len=len(full) - 1, frame_cache=False))(chat(clip))
    assert full.pixel_values.shape[0] == 8 and fitted.pixel_values.shape[0] == 4 and fitted.fitted == "fewer frames"
    assert decodes == [str(clip), str(clip)]  # one decode per encoded sample, none for the retry
    text = processor.tokenizer.decode(fitted.input_ids)
    # 8 frames at 0.5, 1.75, ..., 9.25 s (the centres of 8 equal segments of 10 s); kept: 2nd, 4th, 6th, 8th
    assert [line.split("Frame from ")[1][:5] for line in text.split("\n") if "Frame from" in line] == [
        "00:01", "00:04", "00:06", "00:09"]


def test_changing_video_max_frames_misses_the_cache(processor, tmp_path, cache, decodes):
    clip = write_mp4(tmp_path / "a.mp4")
    fc.build_cache({str(clip): [video_sampling(processor, 1.0, 4)]}, cache)
    decodes.clear()
    hit = Encoder(processor, EncodeConfig(video_max_frames=4)).load_video(Video(str(clip)))
    assert decodes == [] and len(hit.indices) == 4
    miss = Encoder(processor, EncodeConfig(video_max_frames=5)).load_video(Video(str(clip)))
    assert decodes == [str(clip)] and miss.indices == [4, 12, 20, 28, 36]
    Encoder(processor, EncodeConfig(video_max_frames=4, video_fps=0.5)).load_video(Video(str(clip)))
    assert decodes == [str(clip)] * 2


def test_training_eval_and_generate_sample_the_same_frames(processor, tmp_path, cache):
    from smolvlm_cli.eval.runner import _video, video_settings
    from smolvlm_cli.recipe import load_recipe

    clip = write_mp4(tmp_path / "a.mp4")
    expected = [2, 7, 12, 17, 22, 27, 32, 37]  # 10 s at 4 fps, 1 fps capped at the processor's 8 frames
    training = Encoder(processor, EncodeConfig()).load_video(Video(str(clip)))  # a phase without video settings
    generate = fc.load_model_video(clip, processor)
    frames, metadata = _video(str(clip), processor, *video_settings(processor))
    assert training.indices == generate.indices == list(metadata.frames_indices) == expected
    assert np.array_equal(training.frames, generate.frames) and np.array_equal(training.frames, frames)
    assert video_sampling(processor) == VideoSampling(1.0, 8, 64, 1)
    recipe = load_recipe(TINY_RECIPE, ["stages.video.phases.1.video_fps=null",
                                       "stages.video.phases.1.video_max_frames=null"])
    phases = recipe.stages["video"].phases
    # `data cache` without --init derives what init writes: the same as reading the processor
    assert fc.phase_sampling(recipe, phases[0]) == fc.phase_sampling(recipe, phases[0], processor) == VideoSampling(
        1.0, 4, 64, 1)
    assert fc.phase_sampling(recipe, phases[1]) == fc.phase_sampling(recipe, phases[1], processor) == video_sampling(
        processor)


def _clip_recipe(tmp_path, clips) -> str:
    rows = [{"id": str(i), "messages": [
        {"role": "user", "content": [{"type": "video", "path": c.name}, {"type": "text", "text": "Which way?"}]},
        {"role": "assistant", "content": "left"}]} for i, c in enumerate(clips)]
    (tmp_path / "clips.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = yaml.safe_load(TINY_RECIPE.read_text())
    recipe["sources"] = {"clips": {"path": str(tmp_path / "clips.jsonl")}}
    recipe["stages"] = {"video": {"phases": [dict(recipe["stages"]["video"]["phases"][0],
                                                  data=[{"source": "clips", "weight": 100}])]}}
    recipe.pop("eval", None)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    return str(tmp_path / "r.yaml")


def test_data_cache_command(cli, processor, tmp_path, cache, decodes):
    clips = [write_mp4(tmp_path / f"{n}.mp4", seconds=s) for n, s in (("a", 10), ("b", 3), ("c", 5))]
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 garbage " * 8)
    recipe = _clip_recipe(tmp_path, [*clips, bad, bad])
    first = cli("data", "cache", "--recipe", recipe, "--stage", "video", "--nproc", "2")
    assert first.exit_code == 0, first.output
    lines = first.output.strip().splitlines()
    assert lines[0].startswith(f"frame cache {cache}: 3 videos decoded (") and lines[0].endswith(
        " 0 entries already cached, 1 corrupt videos")
    assert lines[1].startswith(f"  corrupt: cannot read video {bad}: ") and len(lines) == 2
    assert len(list(cache.rglob("*.frames"))) == 3
    again = cli("data", "cache", "--recipe", recipe, "--nproc", "2")
    assert again.output.startswith(f"frame cache {cache}: 0 videos decoded (0.0 MiB), 3 entries already cached, "
                                   f"1 corrupt videos\n  corrupt: cannot read video {bad}: ")  # tried again, listed once
    decodes.clear()
    encoder = Encoder(processor, EncodeConfig(video_max_frames=4))  # the phase's cap; the default cache folder
    assert [len(encoder.load_video(Video(str(c))).indices) for c in clips] == [4, 3, 4] and decodes == []
    missing = cli("data", "cache", "--recipe", recipe, "--stage", "vision")
    assert missing.exit_code == 2 and "has no stage 'vision'" in missing.output


@pytest.mark.parametrize("fps,frames,expected", [(None, 4, (1.0, 4)), (2.0, None, (2.0, 8)), (None, None, None)])
def test_a_trained_phase_model_samples_videos_as_the_phase_did(tmp_path, tiny_model_dir, fps, frames, expected):
    """The phase's own frame cap is written into the phase model's processor, so eval and generate of that model
    sample what training sampled (the tiny processor's own: 1 fps, 8 frames)."""
    import shutil
    from types import SimpleNamespace

    from transformers import AutoProcessor

    from smolvlm_cli.train.consolidate import record_video_sampling

    folder = tmp_path / "phase"
    shutil.copytree(tiny_model_dir, folder)
    extra = record_video_sampling(SimpleNamespace(video_fps=fps, video_max_frames=frames))
    if expected is None:
        assert extra is None
        return
    extra(folder)
    before, after = (video_sampling(AutoProcessor.from_pretrained(d)) for d in (tiny_model_dir, folder))
    assert (after.fps, after.max_frames) == expected
    assert (after.longest_edge, after.resample) == (before.longest_edge, before.resample)

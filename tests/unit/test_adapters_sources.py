# One fixture row per source the release recipes name, in that source's published schema (DATASETS.md, built by
# tests/source_fixtures.py), through its adapter into the exact Sample; missing media skipped with a reason; a first
# row lacking keys stops the load.
from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections import Counter
from pathlib import Path

import datasets
import pytest
from PIL import Image as PILImage

from smolvlm_cli.data.adapters import detect_schema, schema_problems, to_sample
from smolvlm_cli.data.adapters_video import INLINE_DIR
from smolvlm_cli.data.sample import Image, Sample, SampleError, Text, Turn, Video
from smolvlm_cli.data.sources import SourceError, SourceSpec, load_source
from tests.source_fixtures import (
    convo,
    finevideo_row,
    llava_onevision_features,
    llava_onevision_row,
    llava_video_row,
    m4_instruct_row,
    mammoth_vl_row,
    moviechat_row,
    mp4_bytes as tiny_mp4,
    sharegpt4video_row,
    smoltalk_row,
    tulu_row,
    video_star_row,
    vista_row,
    vript_clip_row,
    vript_video_row,
    write_media,
)


@pytest.fixture(autouse=True)
def _no_network_no_home_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SMOLVLM_CACHE", str(tmp_path / "smolvlm-cache"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture(scope="module")
def mp4_bytes(tmp_path_factory) -> bytes:
    """A real 2-frame 16x16 H.264 mp4, written by the project's own synthetic-video writer."""
    return tiny_mp4((255, 0, 0), frames=2, size=16, fps=2)


@pytest.fixture
def root(tmp_path, mp4_bytes):
    """A media root laid out as each source's extracted archives are."""
    videos = [
        "academic_source/Charades/Q04US.mp4",  # LLaVA-Video-178K
        "video_data/clip.mp4",  # MAmmoTH-VL
        "Kinetics700/JDKf63ARWuY_000017_000027.mp4",  # Video-STaR
        "339dXVNQXac.mp4",  # Vript, the whole video
        "339dXVNQXac/339dXVNQXac-Scene-002.mp4",  # Vript, a clip in the clips zips' layout
        "temporal_niah/v_0001.mp4",  # VISTA-400K
        "raw_videos/1.mp4",  # MovieChat-1K
        "pexels/12345.mp4",  # ShareGPT4Video
    ]
    images = {"single_image_data/a.jpg": (255, 0, 0), "spot-the-diff/1_1.jpg": (0, 255, 0),
              "spot-the-diff/1_2.jpg": (0, 0, 255)}
    return write_media(tmp_path / "media", videos, images, mp4=mp4_bytes, image_size=(8, 6))


def at(root: Path, rel: str) -> str:
    return str(root / rel)


def sample_of(row, root, schema="auto", index=0, source="s") -> Sample:
    return to_sample(row, index=index, source=source, schema=schema, media_root=root)


# ---------------------------------------------------------------- LLaVA-style sources


def test_llava_onevision_embedded_image_and_text_only_rows():
    red = PILImage.new("RGB", (4, 4), (255, 0, 0))
    row = llava_onevision_row(red)
    assert detect_schema(row) == "llava"
    assert sample_of(row, None) == Sample(
        "ov-1", "s", [Turn("user", [Image(pil=red), Text("How many cubes?")]), Turn("assistant", [Text("3")])],
        {"index": 0, "origin": "CLEVR-Math(MathV360K)"})
    text_only = llava_onevision_row(None, id="mg-2", question="Hi", answer="Hello", data_source="magpie_pro")
    assert sample_of(text_only, None).turns == [Turn("user", [Text("Hi")]), Turn("assistant", [Text("Hello")])]


def test_llava_onevision_parquet_with_image_feature(tmp_path):
    buf = io.BytesIO()
    PILImage.new("RGB", (5, 3), (0, 0, 255)).save(buf, format="PNG")
    rows = [llava_onevision_row({"bytes": buf.getvalue(), "path": None}, id="q1", question="Colour?",
                                answer="Blue.", data_source="chrome_writting")]
    path = tmp_path / "train-00000.parquet"
    datasets.Dataset.from_list(rows, features=llava_onevision_features()).to_parquet(str(path))
    sample = load_source(str(path)).sample(0)
    (image, question), answer = sample.turns[0].parts, sample.turns[1].parts
    assert (image.pil.size, image.pil.convert("RGB").getpixel((0, 0))) == ((5, 3), (0, 0, 255))
    assert (question, answer, sample.meta["origin"]) == (Text("Colour?"), [Text("Blue.")], "chrome_writting")


def test_mammoth_vl_single_multi_image_and_video_rows(root):
    single = mammoth_vl_row()
    assert sample_of(single, root).turns == [
        Turn("user", [Image(path=at(root, "single_image_data/a.jpg")), Text("What colour?")]),
        Turn("assistant", [Text("Rationale... Red.")])]
    multi = mammoth_vl_row(id="mi-1", image=["spot-the-diff/1_1.jpg", "spot-the-diff/1_2.jpg"], question="Same?",
                           answer="No.")
    assert sample_of(multi, root).turns[0].parts == [
        Image(path=at(root, "spot-the-diff/1_1.jpg")), Image(path=at(root, "spot-the-diff/1_2.jpg")), Text("Same?")]
    video = mammoth_vl_row(id="v-1", video="video_data/clip.mp4", question="What happens?", answer="A flash.")
    assert sample_of(video, root).turns[0].parts == [Video(at(root, "video_data/clip.mp4")), Text("What happens?")]


def test_mammoth_vl_json_with_path_and_list_images_also_streamed(tmp_path, root):
    """mammoth_ov_2M.json's `image` is a path in some rows and a list in others: `datasets` types it Json, and
    streamed (no features cached yet, as the recipe streams it) hands the values over JSON-encoded."""
    pair = ["spot-the-diff/1_1.jpg", "spot-the-diff/1_2.jpg"]
    rows = [mammoth_vl_row(), mammoth_vl_row(id="mi-1", image=pair, question="Same?", answer="No."),
            mammoth_vl_row(id="v-1", video="video_data/clip.mp4", question="What happens?", answer="A flash.")]
    path = tmp_path / "mammoth_ov_2M.json"
    path.write_text(json.dumps(rows))
    expected = [[Image(path=at(root, "single_image_data/a.jpg"))], [Image(path=at(root, p)) for p in pair],
                [Video(at(root, "video_data/clip.mp4"))]]
    for streaming in (True, False):  # streamed first: before a map-style load caches the features
        source = load_source(SourceSpec(path=str(path), streaming=streaming, media_root=str(root)))
        skipped: Counter = Counter()
        samples = list(source.samples(skipped=skipped))
        assert skipped == Counter(), (streaming, skipped)
        assert [s.turns[0].parts[:-1] for s in samples] == expected, streaming


def test_m4_instruct_multi_image_and_role_fix(root):
    images = ["spot-the-diff/1_1.jpg", "spot-the-diff/1_2.jpg"]
    row = m4_instruct_row(images=images)
    a, b = (Image(path=at(root, p)) for p in images)
    assert sample_of(row, root, "m4instruct") == Sample(
        "m4-1", "s", [Turn("user", [a, b, Text("What changed?")]), Turn("assistant", [Text("The car left.")])],
        {"index": 0, "origin": "spot-the-diff"})
    # A record that starts with a non-human turn is relabelled human/gpt alternately.
    odd = {**row, "conversations": convo(("gpt", "<image><image>\nWhat changed?"), ("gpt", "The car left."),
                                         ("human", "Anything else?"), ("human", "No."))}
    assert [t.role for t in sample_of(odd, root, "m4instruct").turns] == ["user", "assistant", "user", "assistant"]


def test_llava_video_178k_row_with_image_tag(root):
    row = llava_video_row()
    assert sample_of(row, root) == Sample("Q04US", "s", [
        Turn("user", [Video(at(root, "academic_source/Charades/Q04US.mp4")), Text("Describe what the person does.")]),
        Turn("assistant", [Text("The person opens a door.")]),
        Turn("user", [Text("Then?")]),
        Turn("assistant", [Text("Leaves.")]),
    ], {"index": 0, "origin": "30_60_s_academic_v0_1"})


def test_video_star_row_from_its_generation_code(root):
    row = video_star_row()
    assert detect_schema(row) == "videostar"
    clip = Video(at(root, "Kinetics700/JDKf63ARWuY_000017_000027.mp4"))
    expected = [Turn("user", [clip, Text("What is the person doing?")]),
                Turn("assistant", [Text("They juggle balls.")])]
    assert sample_of(row, root, "videostar").turns == expected
    assert sample_of(row, root).turns == expected  # detected
    # The key may be `video_name` (the demo's JSON) or `video`.
    renamed = video_star_row(key="video_name")
    assert sample_of(renamed, root, "videostar").turns == expected


def test_vista_400k_video_under_image_key(root):
    row = vista_row()
    sample = sample_of(row, root)
    question = "What colour is the needle frame?\nA. red B. blue"
    assert sample.turns == [Turn("user", [Video(at(root, "temporal_niah/v_0001.mp4")), Text(question)]),
                            Turn("assistant", [Text("A")])]
    assert (sample.id, sample.modality) == ("0", "video")


# ---------------------------------------------------------------- FineVideo: mp4 bytes in the row


def test_finevideo_qa_turns_and_video_written_once_content_addressed(root, mp4_bytes):
    digest = hashlib.sha256(mp4_bytes).hexdigest()
    cached = root / INLINE_DIR / digest[:2] / f"{digest}.mp4"
    row = finevideo_row(mp4_bytes)
    assert detect_schema(row) == "finevideo"
    sample = sample_of(row, root, "finevideo", index=7, source="finevideo")
    assert sample == Sample("zdj0yyoEz7I", "finevideo", [
        Turn("user", [Video(str(cached)), Text("Who scores?")]),
        Turn("assistant", [Text("The player in red.")]),
        Turn("user", [Text("How?")]),
        Turn("assistant", [Text("With a dunk.")]),
    ], {"index": 7, "origin": "Sports"})
    assert cached.read_bytes() == mp4_bytes
    stamp = cached.stat().st_mtime_ns
    # Read again (and with the struct streamed as a JSON string): the same file, not rewritten.
    again = sample_of(finevideo_row(mp4_bytes, as_str=True), root, "finevideo")
    assert again.turns[0].parts[0] == Video(str(cached)) and cached.stat().st_mtime_ns == stamp
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]  # no temp files left behind
    from smolvlm_cli.data.video import load_video

    assert load_video(cached, fps=2, max_frames=4, backend="pyav").frames.shape[1:] == (16, 16, 3)


def test_finevideo_without_qa_is_a_description_and_without_root_goes_to_the_cache(tmp_path, mp4_bytes):
    sample = sample_of(finevideo_row(mp4_bytes, qa=False), None, "finevideo")
    digest = hashlib.sha256(mp4_bytes).hexdigest()
    path = tmp_path / "smolvlm-cache" / "media" / INLINE_DIR / digest[:2] / f"{digest}.mp4"
    assert sample.turns == [Turn("user", [Video(str(path)), Text("Describe this video in detail.")]),
                            Turn("assistant", [Text("A player dunks.")])]
    assert path.read_bytes() == mp4_bytes


def test_finevideo_streamed_parquet(tmp_path, root, mp4_bytes):
    rows = [finevideo_row(mp4_bytes), finevideo_row(b"")]  # the second carries no video: skipped, counted
    path = tmp_path / "finevideo.parquet"
    datasets.Dataset.from_list(rows).to_parquet(str(path))
    source = load_source(SourceSpec(path=str(path), streaming=True, schema="finevideo", media_root=str(root)))
    skipped: Counter = Counter()
    samples = list(source.samples(skipped=skipped))
    assert [s.id for s in samples] == ["zdj0yyoEz7I"] and skipped == Counter({"missing media": 1})


# ---------------------------------------------------------------- caption sources


def test_vript_per_video_caption_file_scene_by_scene(root):
    row = vript_video_row(scenes={2: "Eggs are cracked.", 1: "A pan heats."})  # the file's order, not the scenes'
    assert detect_schema(row) == "vript"
    assert sample_of(row, root, "vript") == Sample("339dXVNQXac", "s", [
        Turn("user", [Video(at(root, "339dXVNQXac.mp4")), Text("Describe this video scene by scene.")]),
        Turn("assistant", [Text("Scene 1: A pan heats.\nScene 2: Eggs are cracked.")]),
    ], {"index": 0})


def test_vript_per_clip_row(root):
    row = vript_clip_row(n=2, content="Eggs are cracked.")
    assert detect_schema(row) == "vript"
    assert sample_of(row, root, "vript") == Sample("339dXVNQXac-Scene-002", "s", [
        Turn("user", [Video(at(root, "339dXVNQXac/339dXVNQXac-Scene-002.mp4")),
                      Text("Describe this video in detail.")]),
        Turn("assistant", [Text("Eggs are cracked.")]),
    ], {"index": 0})


def test_moviechat_caption_and_global_qa(root):
    row = moviechat_row()
    assert detect_schema(row) == "moviechat"
    assert sample_of(row, root, "moviechat") == Sample("1", "s", [
        Turn("user", [Video(at(root, "raw_videos/1.mp4")), Text("Describe this video in detail.")]),
        Turn("assistant", [Text("Two friends talk in a cafe.")]),
        Turn("user", [Text("Is it day?")]),
        Turn("assistant", [Text("Yes.")]),
    ], {"index": 0})


def test_sharegpt4video_whole_video_caption(root):
    row = sharegpt4video_row()
    assert detect_schema(row) == "sharegpt4video"
    assert sample_of(row, root, "sharegpt4video") == Sample("12345", "s", [
        Turn("user", [Video(at(root, "pexels/12345.mp4")), Text("Describe this video in detail.")]),
        Turn("assistant", [Text("The video opens with a bird.")]),
    ], {"index": 0})
    with pytest.raises(SampleError) as e:
        sample_of({**row, "captions": row["captions"][:1]}, root, "sharegpt4video")
    assert e.value.reason == "no caption"


# ---------------------------------------------------------------- text SFT


@pytest.mark.parametrize("row", [tulu_row(), smoltalk_row()], ids=["tulu-3-sft-mixture", "smoltalk"])
def test_text_sft_rows(row):
    assert detect_schema(row) == "chat"
    sample = sample_of(row, None)
    assert sample.turns == [Turn("system", [Text("Be brief.")]), Turn("user", [Text("2+2?")]),
                            Turn("assistant", [Text("4")])]
    assert (sample.id, sample.modality) == (row.get("id", "0"), "text")


# ---------------------------------------------------------------- missing media: skipped with a reason


MISSING = [
    ("llava", {"video": "academic_source/Charades/GONE.mp4", "conversations": convo(("human", "<image>\nq"),
                                                                                   ("gpt", "a"))},
     "academic_source/Charades/GONE.mp4"),
    ("llava", {"image": "temporal_niah/gone.mp4", "conversations": convo(("human", "q"), ("gpt", "a"))},
     "temporal_niah/gone.mp4"),
    ("m4instruct", {"image": ["spot-the-diff/1_1.jpg", "spot-the-diff/gone.jpg"],
                    "conversations": convo(("human", "<image><image>"), ("gpt", "a"))}, "spot-the-diff/gone.jpg"),
    ("videostar", {"video_path": "Kinetics700/gone.mp4", "conversations": convo(("human", "<video>\nq"),
                                                                                 ("gpt", "a"))},
     "Kinetics700/gone.mp4"),
    ("vript", {"meta": {"video_id": "gone"}, "data": {"gone-Scene-001": {"clip_id": "gone-Scene-001",
                                                                          "caption": {"content": "c"}}}}, "gone.mp4"),
    ("vript", {"clip_id": "gone-Scene-001", "caption": {"content": "c"}}, "gone/gone-Scene-001.mp4"),
    ("moviechat", {"info": {"video_path": "gone.mp4"}, "caption": "c", "global": []}, "raw_videos/gone.mp4"),
    ("sharegpt4video", {"video_id": "g", "video_path": "pexels/gone.mp4", "captions": [{"idx": "-1", "content": "c"}]},
     "pexels/gone.mp4"),
]


@pytest.mark.parametrize("schema, row, rel", MISSING)
def test_missing_media_is_a_counted_skip(schema, row, rel, root, tmp_path):
    with pytest.raises(SampleError) as e:
        sample_of(row, root, schema)
    assert (e.value.reason, e.value.detail) == ("missing media", at(root, rel))
    # Through a source: the bad row is counted by reason, the good one kept.
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(row) + "\n")
    source = load_source(SourceSpec(path=str(path), schema=schema, media_root=str(root)))
    skipped: Counter = Counter()
    assert list(source.samples(skipped=skipped)) == [] and skipped == Counter({"missing media": 1})


# ---------------------------------------------------------------- a first row lacking keys stops the load


@pytest.mark.parametrize("schema, row, named", [
    ("finevideo", {"mp4": "x", "json": {"content_parent_category": "Sports"}}, "json.content_metadata"),
    ("finevideo", {"__key__": "0001", "__url__": "shard_0.tar", "mp4": "x"}, "json.content_metadata"),
    ("videostar", {"video_name": "a.mp4", "question": "q", "prediction": "p"}, "conversations"),
    ("videostar", {"conversations": []}, "video|video_path|video_name"),
    ("vript", {"video_id": "v", "voiceover": []}, "meta.video_id|clip_id, data|caption.content"),
    ("moviechat", {"caption": "c", "global": []}, "info.video_path"),
    ("sharegpt4video", {"video_id": "v", "video_path": "p.mp4"}, "captions"),
    ("m4instruct", {"id": "1", "image": ["a.jpg"], "metadata": {"dataset": "nlvr2"}}, "conversations"),
])
def test_first_row_missing_keys_names_them(schema, row, named, tmp_path):
    assert schema_problems(row, schema) == named.split(", ")
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(row) + "\n")
    for streaming in (False, True):
        with pytest.raises(SourceError) as e:
            load_source(SourceSpec(path=str(path), schema=schema, streaming=streaming))
        line = e.value.one_line()
        assert f"is not in the {schema} schema: its first row lacks {named} (columns: " in line
        assert "\n" not in line


def test_webdataset_rows_under_auto_stop_as_unknown_schema_also_when_streaming(tmp_path):
    """The recipe's MAmmoTH-VL / VISTA hub ids stream media tars, not annotations: that is said at load."""
    path = tmp_path / "shard.jsonl"
    path.write_text(json.dumps({"__key__": "0001", "__url__": "shard_0.tar", "jpg": "x"}) + "\n")
    with pytest.raises(SourceError, match=r"unknown schema \(columns: __key__, __url__, jpg\)"):
        load_source(SourceSpec(path=str(path), streaming=True))


def test_well_formed_first_rows_load(tmp_path, root):
    rows = [{"video_id": "12345", "video_path": "pexels/12345.mp4", "captions": [{"idx": "-1", "content": "c"}]}]
    path = tmp_path / "sg4v.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = load_source(SourceSpec(path=str(path), media_root=str(root)))  # auto-detected
    assert source.sample(0).turns[0].parts[0] == Video(at(root, "pexels/12345.mp4"))
    shutil.rmtree(root / "pexels")
    with pytest.raises(SampleError, match="missing media"):
        source.sample(0)

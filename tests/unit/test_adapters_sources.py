# One fixture row per source the release recipes name, in that source's published schema (DATASETS.md), through
# its adapter into the exact Sample; missing media skipped with a reason; a first row lacking keys stops the load.
from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image as PILImage

from smolvlm_cli.data.adapters import detect_schema, schema_problems, to_sample
from smolvlm_cli.data.adapters_video import INLINE_DIR
from smolvlm_cli.data.sample import Image, Sample, SampleError, Text, Turn, Video
from smolvlm_cli.data.sources import SourceError, SourceSpec, load_source
from smolvlm_cli.data.synthetic import write_mp4


@pytest.fixture(autouse=True)
def _no_network_no_home_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SMOLVLM_CACHE", str(tmp_path / "smolvlm-cache"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture(scope="module")
def mp4_bytes(tmp_path_factory) -> bytes:
    """A real 2-frame 16x16 H.264 mp4, written by the project's own synthetic-video writer."""
    path = tmp_path_factory.mktemp("mp4") / "tiny.mp4"
    frames = np.zeros((2, 16, 16, 3), dtype=np.uint8)
    frames[1, :, :, 0] = 255
    write_mp4(path, frames, fps=2)
    return path.read_bytes()


@pytest.fixture
def root(tmp_path, mp4_bytes):
    """A media root laid out as each source's extracted archives are."""
    media = tmp_path / "media"
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
    for rel in videos:
        (media / rel).parent.mkdir(parents=True, exist_ok=True)
        (media / rel).write_bytes(mp4_bytes)
    for rel, colour in (("single_image_data/a.jpg", (255, 0, 0)), ("spot-the-diff/1_1.jpg", (0, 255, 0)),
                        ("spot-the-diff/1_2.jpg", (0, 0, 255))):
        (media / rel).parent.mkdir(parents=True, exist_ok=True)
        PILImage.new("RGB", (8, 6), colour).save(media / rel)
    return media


def at(root: Path, rel: str) -> str:
    return str(root / rel)


def convo(*turns: tuple[str, str]) -> list[dict]:
    return [{"from": who, "value": value} for who, value in turns]


def sample_of(row, root, schema="auto", index=0, source="s") -> Sample:
    return to_sample(row, index=index, source=source, schema=schema, media_root=root)


# ---------------------------------------------------------------- LLaVA-style sources


def test_llava_onevision_embedded_image_and_text_only_rows():
    red = PILImage.new("RGB", (4, 4), (255, 0, 0))
    row = {"id": "ov-1", "image": red, "data_source": "CLEVR-Math(MathV360K)",
           "conversations": convo(("human", "<image>\nHow many cubes?"), ("gpt", "3"))}
    assert detect_schema(row) == "llava"
    assert sample_of(row, None) == Sample(
        "ov-1", "s", [Turn("user", [Image(pil=red), Text("How many cubes?")]), Turn("assistant", [Text("3")])],
        {"index": 0, "origin": "CLEVR-Math(MathV360K)"})
    text_only = {"id": "mg-2", "image": None, "data_source": "magpie_pro",
                 "conversations": convo(("human", "Hi"), ("gpt", "Hello"))}
    assert sample_of(text_only, None).turns == [Turn("user", [Text("Hi")]), Turn("assistant", [Text("Hello")])]


def test_llava_onevision_parquet_with_image_feature(tmp_path):
    features = datasets.Features({
        "id": datasets.Value("string"), "image": datasets.Image(),
        "conversations": datasets.List({"from": datasets.Value("string"), "value": datasets.Value("string")}),
        "data_source": datasets.Value("string"),
    })
    buf = io.BytesIO()
    PILImage.new("RGB", (5, 3), (0, 0, 255)).save(buf, format="PNG")
    rows = {"id": ["q1"], "image": [{"bytes": buf.getvalue(), "path": None}], "data_source": ["chrome_writting"],
            "conversations": [convo(("human", "<image>\nColour?"), ("gpt", "Blue."))]}
    path = tmp_path / "train-00000.parquet"
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(path))
    sample = load_source(str(path)).sample(0)
    (image, question), answer = sample.turns[0].parts, sample.turns[1].parts
    assert (image.pil.size, image.pil.convert("RGB").getpixel((0, 0))) == ((5, 3), (0, 0, 255))
    assert (question, answer, sample.meta["origin"]) == (Text("Colour?"), [Text("Blue.")], "chrome_writting")


def test_mammoth_vl_single_multi_image_and_video_rows(root):
    single = {"id": "si-1", "image": "single_image_data/a.jpg",
              "conversations": convo(("human", "<image>\nWhat colour?"), ("gpt", "Rationale... Red."))}
    assert sample_of(single, root).turns == [
        Turn("user", [Image(path=at(root, "single_image_data/a.jpg")), Text("What colour?")]),
        Turn("assistant", [Text("Rationale... Red.")])]
    multi = {"id": "mi-1", "image": ["spot-the-diff/1_1.jpg", "spot-the-diff/1_2.jpg"],
             "conversations": convo(("human", "<image><image>\nSame?"), ("gpt", "No."))}
    assert sample_of(multi, root).turns[0].parts == [
        Image(path=at(root, "spot-the-diff/1_1.jpg")), Image(path=at(root, "spot-the-diff/1_2.jpg")), Text("Same?")]
    video = {"id": "v-1", "video": "video_data/clip.mp4",
             "conversations": convo(("human", "<video>\nWhat happens?"), ("gpt", "A flash."))}
    assert sample_of(video, root).turns[0].parts == [Video(at(root, "video_data/clip.mp4")), Text("What happens?")]


def test_m4_instruct_multi_image_and_role_fix(root):
    images = ["spot-the-diff/1_1.jpg", "spot-the-diff/1_2.jpg"]
    meta = {"dataset": "spot-the-diff", "split": "train", "num_sample": 2}
    row = {"id": "m4-1", "image": images, "metadata": meta,
           "conversations": convo(("human", "<image><image>\nWhat changed?"), ("gpt", "The car left."))}
    a, b = (Image(path=at(root, p)) for p in images)
    assert sample_of(row, root, "m4instruct") == Sample(
        "m4-1", "s", [Turn("user", [a, b, Text("What changed?")]), Turn("assistant", [Text("The car left.")])],
        {"index": 0, "origin": "spot-the-diff"})
    # A record that starts with a non-human turn is relabelled human/gpt alternately.
    odd = {**row, "conversations": convo(("gpt", "<image><image>\nWhat changed?"), ("gpt", "The car left."),
                                         ("human", "Anything else?"), ("human", "No."))}
    assert [t.role for t in sample_of(odd, root, "m4instruct").turns] == ["user", "assistant", "user", "assistant"]


def test_llava_video_178k_row_with_image_tag(root):
    row = {"id": "Q04US", "data_source": "30_60_s_academic_v0_1", "video": "academic_source/Charades/Q04US.mp4",
           "conversations": convo(("human", "<image>\nDescribe what the person does."),
                                  ("gpt", "The person opens a door."), ("human", "Then?"), ("gpt", "Leaves."))}
    assert sample_of(row, root) == Sample("Q04US", "s", [
        Turn("user", [Video(at(root, "academic_source/Charades/Q04US.mp4")), Text("Describe what the person does.")]),
        Turn("assistant", [Text("The person opens a door.")]),
        Turn("user", [Text("Then?")]),
        Turn("assistant", [Text("Leaves.")]),
    ], {"index": 0, "origin": "30_60_s_academic_v0_1"})


def test_video_star_row_from_its_generation_code(root):
    row = {"video_path": "Kinetics700/JDKf63ARWuY_000017_000027.mp4", "question": "What is the person doing?",
           "question_id": "k700-17", "label": {"action": ["juggling balls"]}, "label_type": "action",
           "output": "They juggle balls.", "rationale": True, "cls_correct": True, "qa_type": "qa",
           "conversations": convo(("human", "<video>\nWhat is the person doing?"), ("gpt", "They juggle balls."))}
    assert detect_schema(row) == "videostar"
    clip = Video(at(root, "Kinetics700/JDKf63ARWuY_000017_000027.mp4"))
    expected = [Turn("user", [clip, Text("What is the person doing?")]),
                Turn("assistant", [Text("They juggle balls.")])]
    assert sample_of(row, root, "videostar").turns == expected
    assert sample_of(row, root).turns == expected  # detected
    # The key may be `video_name` (the demo's JSON) or `video`.
    renamed = {**{k: v for k, v in row.items() if k != "video_path"}, "video_name": row["video_path"]}
    assert sample_of(renamed, root, "videostar").turns == expected


def test_vista_400k_video_under_image_key(root):
    row = {"image": "temporal_niah/v_0001.mp4",
           "conversations": convo(("human", "What colour is the needle frame?\nA. red B. blue"), ("gpt", "A"))}
    sample = sample_of(row, root)
    question = "What colour is the needle frame?\nA. red B. blue"
    assert sample.turns == [Turn("user", [Video(at(root, "temporal_niah/v_0001.mp4")), Text(question)]),
                            Turn("assistant", [Text("A")])]
    assert (sample.id, sample.modality) == ("0", "video")


# ---------------------------------------------------------------- FineVideo: mp4 bytes in the row


def finevideo_row(mp4: bytes, *, qa=True, as_str=False) -> dict:
    info = {
        "content_parent_category": "Sports", "content_fine_category": "Basketball",
        "original_json_filename": "zdj0yyoEz7I.json",
        "content_metadata": {
            "title": "A dunk", "description": "A player dunks.", "fps": 2.0, "characterList": [],
            "qAndA": [{"question": "Who scores?", "answer": "The player in red."},
                      {"question": "How?", "answer": "With a dunk."}] if qa else [],
            "scenes": [{"sceneId": 1, "title": "Dunk", "activities": []}],
        },
    }
    return {"mp4": mp4, "json": json.dumps(info) if as_str else info}


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
    def clip(n, content):
        cid = f"339dXVNQXac-Scene-{n:03d}"
        return cid, {"video_id": "339dXVNQXac", "clip_id": cid, "video_title": "Cooking",
                     "caption": {"shot_type": "close-up", "camera_movement": "static", "content": content,
                                 "scene_title": f"Step {n}"}, "voiceover": ["..."]}
    row = {"meta": {"video_id": "339dXVNQXac", "video_title": "Cooking", "num_clips": 2, "integrity": True},
           "data": dict([clip(2, "Eggs are cracked."), clip(1, "A pan heats.")])}
    assert detect_schema(row) == "vript"
    assert sample_of(row, root, "vript") == Sample("339dXVNQXac", "s", [
        Turn("user", [Video(at(root, "339dXVNQXac.mp4")), Text("Describe this video scene by scene.")]),
        Turn("assistant", [Text("Scene 1: A pan heats.\nScene 2: Eggs are cracked.")]),
    ], {"index": 0})


def test_vript_per_clip_row(root):
    row = {"video_id": "339dXVNQXac", "clip_id": "339dXVNQXac-Scene-002", "video_title": "Cooking",
           "caption": {"shot_type": "close-up", "camera_movement": "static", "content": "Eggs are cracked.",
                       "scene_title": "Step 2"}, "voiceover": ["Now the eggs."]}
    assert detect_schema(row) == "vript"
    assert sample_of(row, root, "vript") == Sample("339dXVNQXac-Scene-002", "s", [
        Turn("user", [Video(at(root, "339dXVNQXac/339dXVNQXac-Scene-002.mp4")),
                      Text("Describe this video in detail.")]),
        Turn("assistant", [Text("Eggs are cracked.")]),
    ], {"index": 0})


def test_moviechat_caption_and_global_qa(root):
    row = {"info": {"video_path": "1.mp4", "url": "https://example.org/1", "class": "drama", "w": 1280, "h": 720,
                    "fps": 24.0, "num_frame": 9000},
           "global": [{"question": "Is it day?", "answer": "Yes."}],
           "breakpoint": [{"time": 3200, "question": "What is he holding?", "answer": "A cup."}],
           "caption": "Two friends talk in a cafe."}
    assert detect_schema(row) == "moviechat"
    assert sample_of(row, root, "moviechat") == Sample("1", "s", [
        Turn("user", [Video(at(root, "raw_videos/1.mp4")), Text("Describe this video in detail.")]),
        Turn("assistant", [Text("Two friends talk in a cafe.")]),
        Turn("user", [Text("Is it day?")]),
        Turn("assistant", [Text("Yes.")]),
    ], {"index": 0})


def test_sharegpt4video_whole_video_caption(root):
    row = {"video_id": "12345", "video_path": "pexels/12345.mp4",
           "zip_folder": "zip_folder/pexels/pexels_videos_1.zip",
           "captions": [{"idx": "0", "content": "A frame."}, {"idx": "-1", "content": "The video opens with a bird."}],
           "timestamp": [0.0, 1.5], "keyframe": [0, 36]}
    assert detect_schema(row) == "sharegpt4video"
    assert sample_of(row, root, "sharegpt4video") == Sample("12345", "s", [
        Turn("user", [Video(at(root, "pexels/12345.mp4")), Text("Describe this video in detail.")]),
        Turn("assistant", [Text("The video opens with a bird.")]),
    ], {"index": 0})
    with pytest.raises(SampleError) as e:
        sample_of({**row, "captions": row["captions"][:1]}, root, "sharegpt4video")
    assert e.value.reason == "no caption"


# ---------------------------------------------------------------- text SFT


@pytest.mark.parametrize("row", [
    {"id": "oasst1_6668", "source": "ai2-adapt-dev/oasst1_converted",  # tulu-3-sft-mixture
     "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                  {"role": "assistant", "content": "4"}]},
    {"source": "smol-magpie-ultra",  # SmolTalk
     "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                  {"role": "assistant", "content": "4"}]},
])
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

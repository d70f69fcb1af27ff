# Adapters (every schema into the one Sample format, every bad-row reason), local source loading, the
# offline error and rank sharding. Fixtures are built here in tmp_path; nothing touches the network.
from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import datasets
import huggingface_hub
import pytest
from PIL import Image as PILImage

from smolvlm_cli.data.adapters import detect_schema, from_cauldron, from_chat, from_jsonl, from_llava, to_sample
from smolvlm_cli.data.sample import Image, Sample, SampleError, Text, Turn, Video
from smolvlm_cli.data.sources import Source, SourceError, SourceSpec, load_source, shard, shard_range


@pytest.fixture(autouse=True)
def _no_network_no_home_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def png_bytes(color: tuple[int, int, int], size: tuple[int, int] = (4, 3)) -> bytes:
    buf = io.BytesIO()
    PILImage.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def media(tmp_path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    (root / "a.png").write_bytes(png_bytes((255, 0, 0)))
    (root / "b.png").write_bytes(png_bytes((0, 255, 0)))
    # Adapters only check that a video exists; decoding belongs to data/video.py.
    (root / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    return root


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def llava(*values: str, **fields) -> dict:
    """A LLaVA-style row whose turns alternate human/gpt."""
    return {**fields, "conversations": [{"from": ("human", "gpt")[k % 2], "value": v} for k, v in enumerate(values)]}


def chat(*contents, **fields) -> dict:
    """A `messages` row whose turns alternate user/assistant."""
    return {
        **fields,
        "messages": [{"role": ("user", "assistant")[k % 2], "content": c} for k, c in enumerate(contents)],
    }


def cauldron_dataset(n: int = 2):
    features = datasets.Features(
        {
            "images": datasets.List(datasets.Image()),
            "texts": datasets.List(
                {
                    "user": datasets.Value("string"),
                    "assistant": datasets.Value("string"),
                    "source": datasets.Value("string"),
                }
            ),
        }
    )
    rows = {
        "images": [[{"bytes": png_bytes((i, 0, 0)), "path": None}] * (i % 2 + 1) for i in range(n)],
        "texts": [
            [
                {"user": f"q{i}a", "assistant": f"a{i}a", "source": "ai2d"},
                {"user": f"q{i}b", "assistant": f"a{i}b", "source": "ai2d"},
            ]
            for i in range(n)
        ],
    }
    return datasets.Dataset.from_dict(rows, features=features)


def turns_of(sample: Sample) -> list[tuple[str, list]]:
    """Parts with images reduced to (width, height, first pixel), so decoded and path images compare exactly."""

    def part(p):
        if isinstance(p, Image):
            img = p.pil if p.pil is not None else PILImage.open(io.BytesIO(p.data)) if p.data else PILImage.open(p.path)
            return ("image", img.size, img.convert("RGB").getpixel((0, 0)))
        return p

    return [(t.role, [part(p) for p in t.parts]) for t in sample.turns]


# ---------------------------------------------------------------- schema detection


@pytest.mark.parametrize(
    "row, schema",
    [
        ({"images": [], "texts": []}, "cauldron"),
        ({"conversations": [], "image": "x.png"}, "llava"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "chat"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}, "jsonl"),
        ({"id": "7", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": []}]}, "jsonl"),
    ],
)
def test_detect_schema(row, schema):
    assert detect_schema(row) == schema


def test_detect_schema_unknown_and_non_mapping():
    with pytest.raises(SampleError) as e:
        detect_schema({"question": "q", "answer": "a"})
    assert e.value.reason == "unknown schema" and "['answer', 'question']" in e.value.detail
    with pytest.raises(SampleError) as e:
        detect_schema(["not", "a", "row"])
    assert e.value.reason == "malformed row"


def test_schema_override_wins_over_detection():
    row = llava("q", "a")
    assert to_sample(row, index=0, source="s").turns[1].parts == [Text("a")]
    with pytest.raises(SampleError) as e:
        to_sample(row, index=0, source="s", schema="chat")
    assert e.value.reason == "malformed row"
    with pytest.raises(ValueError, match="unknown schema 'sharegpt'"):
        to_sample(row, index=0, source="s", schema="sharegpt")


# ---------------------------------------------------------------- The Cauldron / Docmatix


def test_cauldron_images_first_in_first_user_turn():
    red, green = PILImage.new("RGB", (2, 2), (255, 0, 0)), PILImage.new("RGB", (2, 2), (0, 255, 0))
    row = {
        "images": [red, {"bytes": b"PNGDATA", "path": "ignored.png"}, green],
        "texts": [
            {"user": "What is left?", "assistant": "A red square.", "source": "vqav2"},
            {"user": "And right?", "assistant": "Green.", "source": "vqav2"},
        ],
    }
    sample = from_cauldron(row, index=3, source="the_cauldron:vqav2")
    assert sample == Sample(
        id="3",
        source="the_cauldron:vqav2",
        turns=[
            Turn("user", [Image(pil=red), Image(data=b"PNGDATA"), Image(pil=green), Text("What is left?")]),
            Turn("assistant", [Text("A red square.")]),
            Turn("user", [Text("And right?")]),
            Turn("assistant", [Text("Green.")]),
        ],
        meta={"index": 3, "origin": "vqav2"},
    )
    assert sample.modality == "multi-image"


def test_cauldron_text_only_and_path_images(media):
    text_only = from_cauldron({"images": [], "texts": [{"user": "2+2?", "assistant": "4"}]}, index=0, source="c")
    assert text_only.turns == [Turn("user", [Text("2+2?")]), Turn("assistant", [Text("4")])]
    assert text_only.modality == "text"
    row = {"images": [{"bytes": None, "path": "a.png"}, "b.png"], "texts": [{"user": "q", "assistant": "a"}]}
    parts = from_cauldron(row, index=0, source="c", media_root=media).turns[0].parts
    assert parts == [Image(path=str(media / "a.png")), Image(path=str(media / "b.png")), Text("q")]


@pytest.mark.parametrize(
    "row, reason",
    [
        ({"images": [], "texts": []}, "empty conversation"),
        ({"images": [], "texts": "q/a"}, "malformed row"),
        ({"images": {}, "texts": [{"user": "q", "assistant": "a"}]}, "malformed row"),
        ({"images": [], "texts": [{"user": "q"}]}, "malformed row"),
        ({"images": [], "texts": [{"user": "q", "assistant": None}]}, "malformed row"),
        ({"images": [], "texts": ["q"]}, "malformed row"),
        ({"images": [42], "texts": [{"user": "q", "assistant": "a"}]}, "malformed row"),
        (
            {"images": [{"bytes": None, "path": "gone.png"}], "texts": [{"user": "q", "assistant": "a"}]},
            "missing media",
        ),
        ({"images": [], "texts": [{"user": "q", "assistant": "  "}]}, "empty turn"),
    ],
)
def test_cauldron_bad_rows(row, reason, tmp_path):
    with pytest.raises(SampleError) as e:
        from_cauldron(row, index=0, source="c", media_root=tmp_path)
    assert e.value.reason == reason
    if reason == "missing media":
        assert e.value.detail == str(tmp_path / "gone.png")


# ---------------------------------------------------------------- LLaVA-style


def test_llava_placeholders_become_parts_in_place(media):
    row = {
        "id": "m4-17",
        "image": ["a.png", "b.png"],
        "conversations": [
            {"from": "system", "value": "Answer briefly."},
            {"from": "human", "value": "Compare <image> with\n<image>\nWhich is red?"},
            {"from": "gpt", "value": "The first."},
            {"from": "human", "value": "Sure?"},
            {"from": "gpt", "value": "Yes."},
        ],
    }
    sample = from_llava(row, index=9, source="m4", media_root=media)
    a, b = Image(path=str(media / "a.png")), Image(path=str(media / "b.png"))
    assert sample == Sample(
        id="m4-17",
        source="m4",
        turns=[
            Turn("system", [Text("Answer briefly.")]),
            Turn("user", [Text("Compare"), a, Text("with"), b, Text("Which is red?")]),
            Turn("assistant", [Text("The first.")]),
            Turn("user", [Text("Sure?")]),
            Turn("assistant", [Text("Yes.")]),
        ],
        meta={"index": 9},
    )


def test_llava_media_without_placeholder_goes_first_in_first_user_turn(media):
    row = {
        "image": "a.png",
        "video": "clip.mp4",
        "conversations": [
            {"from": "system", "value": "sys"},
            {"from": "human", "value": "Describe."},
            {"from": "gpt", "value": "Done."},
        ],
    }
    sample = from_llava(row, index=0, source="ov", media_root=media)
    assert sample.turns[1] == Turn(
        "user", [Image(path=str(media / "a.png")), Video(path=str(media / "clip.mp4")), Text("Describe.")]
    )
    assert sample.turns[0] == Turn("system", [Text("sys")])
    assert sample.modality == "video"


def test_llava_video_rows(media):
    tagged = llava("<video>\nWhat happens?", "x", video="clip.mp4")
    # LLaVA-Video-178K marks its video with <image>.
    image_tag = llava("<image>\nWhat happens?", "x", video="clip.mp4")
    clip = Video(path=str(media / "clip.mp4"))
    for row in (tagged, image_tag):
        assert from_llava(row, index=0, source="v", media_root=media).turns[0] == Turn(
            "user", [clip, Text("What happens?")]
        )


def test_llava_text_only_and_absolute_paths(media):
    row = llava("hi", "hello", id=12, image=None)
    sample = from_llava(row, index=0, source="s")
    assert (sample.id, sample.modality) == ("12", "text")
    absolute = llava("<image>", "red", image=str(media / "a.png"))
    parts = from_llava(absolute, index=0, source="s", media_root="/elsewhere").turns[0].parts
    assert parts == [Image(path=str(media / "a.png"))]


def test_llava_embedded_image_bytes():
    row = llava("<image>q", "a", image={"bytes": b"PNG", "path": None})
    assert from_llava(row, index=0, source="ov").turns[0].parts == [Image(data=b"PNG"), Text("q")]


@pytest.mark.parametrize(
    "row, reason",
    [
        ({"conversations": []}, "empty conversation"),
        ({"conversations": "human: hi"}, "malformed row"),
        ({"conversations": [{"from": "human"}]}, "malformed row"),
        ({"conversations": [{"from": "human", "value": 3}]}, "malformed row"),
        ({"conversations": ["hi"]}, "malformed row"),
        ({"conversations": [{"from": "bot", "value": "hi"}]}, "unknown role"),
        (llava("<image><image>", "a", image="a.png"), "media mismatch"),
        (llava("<image>", "a", image=["a.png", "b.png"]), "media mismatch"),
        (llava("<image> what?", "a"), "media mismatch"),
        (llava("<video>", "a", image="a.png"), "media mismatch"),
        (llava("<image>", "a", image="nope.png"), "missing media"),
        (llava("q", "a", video="nope.mp4"), "missing media"),
        (llava("q", "a", video={"bytes": b""}), "malformed row"),
        ({"image": "a.png", "conversations": [{"from": "gpt", "value": "a"}]}, "malformed row"),
        ({"conversations": [{"from": "human", "value": "q"}, {"from": "human", "value": "q2"}]}, "no assistant turn"),
        (llava("q", "\n"), "empty turn"),
    ],
)
def test_llava_bad_rows(row, reason, media):
    with pytest.raises(SampleError) as e:
        from_llava(row, index=0, source="l", media_root=media)
    assert e.value.reason == reason


# ---------------------------------------------------------------- chat and the user JSONL format


def test_chat_rows():
    row = {
        "messages": [
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
        ]
    }
    assert from_chat(row, index=4, source="smoltalk") == Sample(
        "4",
        "smoltalk",
        [Turn("system", [Text("Be kind.")]), Turn("user", [Text("Hi")]), Turn("assistant", [Text("Hello!")])],
        {"index": 4},
    )


@pytest.mark.parametrize(
    "row, reason",
    [
        ({"messages": []}, "empty conversation"),
        ({"messages": None}, "malformed row"),
        ({"messages": ["hi"]}, "malformed row"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}, "malformed row"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "unknown role"),
        ({"messages": [{"content": "x"}]}, "unknown role"),
    ],
)
def test_chat_bad_rows(row, reason):
    with pytest.raises(SampleError) as e:
        from_chat(row, index=0, source="c")
    assert e.value.reason == reason


def test_jsonl_rows_with_typed_parts(media):
    row = {
        "id": "u1",
        "messages": [
            {"role": "system", "content": "You see images."},
            {
                "role": "user",
                "content": [
                    {"type": "image", "path": "a.png"},
                    {"type": "text", "text": "And this clip?"},
                    {"type": "video", "path": "clip.mp4"},
                ],
            },
            # datasets fills the keys a part lacks with None; that must not matter.
            {"role": "assistant", "content": [{"type": "text", "text": "A red frame.", "path": None}]},
            {"role": "user", "content": "Thanks"},
            {"role": "assistant", "content": "Welcome"},
        ],
    }
    sample = from_jsonl(row, index=0, source="mine", media_root=media)
    assert sample == Sample(
        "u1",
        "mine",
        [
            Turn("system", [Text("You see images.")]),
            Turn(
                "user", [Image(path=str(media / "a.png")), Text("And this clip?"), Video(path=str(media / "clip.mp4"))]
            ),
            Turn("assistant", [Text("A red frame.")]),
            Turn("user", [Text("Thanks")]),
            Turn("assistant", [Text("Welcome")]),
        ],
        {"index": 0},
    )


@pytest.mark.parametrize(
    "content, reason",
    [
        ([{"type": "audio", "path": "a.wav"}], "malformed row"),
        ([{"type": "image"}], "malformed row"),
        ([{"type": "image", "path": ""}], "malformed row"),
        ([{"type": "text", "text": 5}], "malformed row"),
        (["plain string part"], "malformed row"),
        ({"type": "text", "text": "x"}, "malformed row"),
        ([{"type": "image", "path": "missing.png"}], "missing media"),
        ([{"type": "video", "path": "missing.mp4"}], "missing media"),
        ([{"type": "text", "text": "   "}], "empty turn"),
    ],
)
def test_jsonl_bad_parts(content, reason, media):
    row = chat(content, "a")
    with pytest.raises(SampleError) as e:
        from_jsonl(row, index=0, source="j", media_root=media)
    assert e.value.reason == reason
    if reason == "missing media":
        assert e.value.detail == str(media / content[0]["path"])


# ---------------------------------------------------------------- loading local sources


def test_load_cauldron_parquet_with_real_png(tmp_path):
    path = tmp_path / "ai2d.parquet"
    cauldron_dataset(3).to_parquet(str(path))
    source = load_source(SourceSpec(path=str(path), name="cauldron:ai2d"))
    assert len(source) == 3 and not source.streaming
    sample = source.sample(1)
    assert turns_of(sample) == [
        ("user", [("image", (4, 3), (1, 0, 0)), ("image", (4, 3), (1, 0, 0)), Text("q1a")]),
        ("assistant", [Text("a1a")]),
        ("user", [Text("q1b")]),
        ("assistant", [Text("a1b")]),
    ]
    assert (sample.id, sample.source, sample.meta) == ("1", "cauldron:ai2d", {"index": 1, "origin": "ai2d"})


def test_load_folder_of_parquet_files(tmp_path):
    folder = tmp_path / "docmatix"
    folder.mkdir()
    ds = cauldron_dataset(5)
    ds.select(range(3)).to_parquet(str(folder / "train-00000.parquet"))
    ds.select(range(3, 5)).to_parquet(str(folder / "train-00001.parquet"))
    source = load_source(str(folder))
    assert [s.turns[0].parts[-1] for s in source.samples()] == [Text(f"q{i}a") for i in range(5)]
    assert source.media_root == folder.absolute()


def test_load_llava_json_with_media_folder(tmp_path, media):
    rows = [
        llava("<image>\nColour?", "Red.", id="a", image="media/a.png"),
        llava("<image><image>Same?", "No.", id="b", image=["media/a.png", "media/b.png"]),
        llava("<image>\nWhat?", "A clip.", id="c", video="media/clip.mp4"),
        llava("Hi", "Hello", id="d"),
    ]
    path = tmp_path / "llava.json"
    path.write_text(json.dumps(rows))
    source = load_source(str(path))
    samples = list(source.samples())
    assert [(s.id, s.modality) for s in samples] == [
        ("a", "image"),
        ("b", "multi-image"),
        ("c", "video"),
        ("d", "text"),
    ]
    assert samples[1].turns[0].parts == [
        Image(path=str(media / "a.png")),
        Image(path=str(media / "b.png")),
        Text("Same?"),
    ]
    # An explicit media_root replaces the file's folder.
    moved = load_source(SourceSpec(path=str(path), media_root=str(tmp_path / "elsewhere")))
    with pytest.raises(SampleError) as e:
        moved.sample(0)
    assert e.value.reason == "missing media"


def test_load_chat_jsonl_and_user_jsonl(tmp_path, media):
    chat_file = write_jsonl(tmp_path / "chat.jsonl", [chat(f"q{i}", f"a{i}") for i in range(3)])
    assert [s.turns for s in load_source(str(chat_file)).samples()] == [
        [Turn("user", [Text(f"q{i}")]), Turn("assistant", [Text(f"a{i}")])] for i in range(3)
    ]
    user = write_jsonl(
        tmp_path / "user.jsonl",
        [
            {
                "id": "img",
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image", "path": "media/a.png"}, {"type": "text", "text": "Colour?"}],
                    },
                    {"role": "assistant", "content": "Red"},
                ],
            },
            {
                "messages": [
                    {"role": "system", "content": "sys"},
                    {"role": "user", "content": [{"type": "video", "path": str(media / "clip.mp4")}]},
                    {"role": "assistant", "content": "A clip"},
                ]
            },
            {"id": "txt", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
        ],
    )
    samples = list(load_source(SourceSpec(path=str(user), schema="jsonl")).samples())
    assert [s.id for s in samples] == ["img", "1", "txt"]
    assert samples[0].turns[0].parts == [Image(path=str(media / "a.png")), Text("Colour?")]
    assert samples[1].turns[1].parts == [Video(path=str(media / "clip.mp4"))]
    assert samples[2].turns[1].parts == [Text("Hello")]


def test_load_save_to_disk_dataset_and_dataset_dict(tmp_path):
    rows = {
        "messages": [
            [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}] for i in range(4)
        ]
    }
    single = tmp_path / "single"
    datasets.Dataset.from_dict(rows).save_to_disk(str(single))
    assert [s.turns[0].parts for s in load_source(str(single)).samples()] == [[Text(f"q{i}")] for i in range(4)]
    both = tmp_path / "dict"
    ds = datasets.Dataset.from_dict(rows)
    datasets.DatasetDict({"train": ds.select(range(3)), "validation": ds.select([3])}).save_to_disk(str(both))
    val = load_source(SourceSpec(path=str(both), split="validation"))
    assert len(val) == 1 and val.sample(0).turns[0].parts == [Text("q3")]
    with pytest.raises(SourceError, match="split 'test' not in") as e:
        load_source(SourceSpec(path=str(both), split="test"))
    assert "train, validation" in e.value.one_line()


def test_streaming_local_source(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [chat(f"q{i}", "a") for i in range(5)])
    source = load_source(SourceSpec(path=str(path), streaming=True))
    assert source.streaming
    with pytest.raises(TypeError):
        len(source)
    assert [(i, row["messages"][0]["content"]) for i, row in source] == [(i, f"q{i}") for i in range(5)]


def test_samples_count_bad_rows_only_when_asked(tmp_path, media):
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            chat("ok", "fine"),
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image", "path": "gone.png"}]},
                    {"role": "assistant", "content": "x"},
                ]
            },
            {"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "x"}]},
            {"messages": []},
        ],
    )
    source = load_source(str(path))
    skipped: Counter = Counter()
    assert [s.id for s in source.samples(skipped=skipped)] == ["0"]
    assert skipped == Counter({"missing media": 1, "unknown role": 1, "empty conversation": 1})
    with pytest.raises(SampleError, match="missing media"):
        list(source.samples())


# ---------------------------------------------------------------- source errors


def test_offline_hub_id_not_cached_names_the_dataset():
    switches = (datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE)
    with pytest.raises(SourceError) as e:
        load_source(SourceSpec(path="nobody-here/made-up-dataset-0", config="sub"))
    line = e.value.one_line()
    assert "dataset 'nobody-here/made-up-dataset-0' is not in the local cache and HF_HUB_OFFLINE is set" in line
    assert "hf download nobody-here/made-up-dataset-0 --repo-type dataset" in line and "local copy" in line
    # The libraries' own offline switches are restored afterwards.
    assert (datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE) == switches


def test_missing_and_unsupported_local_paths(tmp_path):
    with pytest.raises(SourceError, match="data source './nope/data.jsonl' not found"):
        load_source("./nope/data.jsonl")
    # Shaped like a hub id, but a data file name: a missing local file, not a hub lookup.
    with pytest.raises(SourceError, match="data source 'nope/train.jsonl' not found"):
        load_source("nope/train.jsonl")
    bad = tmp_path / "rows.txt"
    bad.write_text("a,b\n")
    with pytest.raises(SourceError, match="unsupported type '.txt'"):
        load_source(str(bad))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"messages": [\n')
    with pytest.raises(SourceError, match="cannot read data source"):
        load_source(str(broken))


def test_unknown_schema_is_a_source_error_unless_overridden(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(SourceError, match=r"unknown schema \(columns: answer, question\)"):
        load_source(str(path))
    forced = load_source(SourceSpec(path=str(path), schema="chat"))
    with pytest.raises(SampleError, match="malformed row"):
        forced.sample(0)


# ---------------------------------------------------------------- sharding


def assert_partition(shares: list[list], everything: list) -> None:
    flat = [x for share in shares for x in share]
    assert sorted(flat) == sorted(everything), "union of all ranks must be everything, each once"
    assert len(flat) == len(set(flat)), "ranks must be pairwise disjoint"


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [0, 1, 5, 7, 12])
def test_shard_range_partitions(n, world_size):
    blocks = [shard_range(n, r, world_size) for r in range(world_size)]
    assert_partition([list(b) for b in blocks], list(range(n)))
    assert max(len(b) for b in blocks) - min(len(b) for b in blocks) <= 1


def test_shard_range_exact_blocks():
    assert [shard_range(7, r, 3) for r in range(3)] == [range(0, 3), range(3, 5), range(5, 7)]
    assert [shard_range(2, r, 4) for r in range(4)] == [range(0, 1), range(1, 2), range(2, 2), range(2, 2)]


@pytest.mark.parametrize("world_size", [2, 3])
def test_shard_lists_and_iterators(world_size):
    items = list(range(10))
    assert_partition([shard(items, r, world_size) for r in range(world_size)], items)
    assert_partition([list(shard(iter(items), r, world_size)) for r in range(world_size)], items)
    assert shard(items, 1, 3) == [4, 5, 6]
    assert list(shard(iter(items), 1, 3)) == [1, 4, 7]


def test_shard_rejects_bad_rank():
    for rank, world in ((2, 2), (-1, 2), (0, 0)):
        with pytest.raises(ValueError, match="rank"):
            shard([1, 2], rank, world)


def test_shard_range_matches_datasets_shard():
    ds = datasets.Dataset.from_dict({"i": list(range(11))})
    for r in range(4):
        assert shard(ds, r, 4)["i"] == list(shard_range(11, r, 4))


@pytest.mark.parametrize("world_size", [2, 3])
def test_source_rows_map_style_indices_are_global(tmp_path, world_size):
    path = write_jsonl(tmp_path / "n.jsonl", [chat(str(i), "a") for i in range(7)])
    source = load_source(str(path))
    shares = [list(source.rows(r, world_size)) for r in range(world_size)]
    assert all(int(row["messages"][0]["content"]) == i for share in shares for i, row in share)
    assert_partition([[i for i, _ in share] for share in shares], list(range(7)))


@pytest.mark.parametrize("n_files, world_size", [(1, 2), (2, 2), (3, 2), (4, 2)])
def test_source_rows_streaming_disjoint_and_complete(tmp_path, n_files, world_size):
    """One file splits example by example, files divisible by world_size split by file; both partition."""
    folder = tmp_path / "stream"
    folder.mkdir()
    values = list(range(9))
    for f in range(n_files):
        chunk = values[f::n_files]
        write_jsonl(folder / f"part-{f}.jsonl", [chat(str(v), "a") for v in chunk])
    source = load_source(SourceSpec(path=str(folder), streaming=True))
    shares = [list(source.rows(r, world_size)) for r in range(world_size)]
    assert_partition([[int(row["messages"][0]["content"]) for _, row in share] for share in shares], values)
    indices = [i for share in shares for i, _ in share]
    assert len(indices) == len(set(indices)) == 9
    if n_files == 1:  # split example by example: the index is the stream position
        assert all(int(row["messages"][0]["content"]) == i for share in shares for i, row in share)


def test_source_is_iterable_of_index_row(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [chat("q", "a")])
    source = load_source(str(path))
    assert isinstance(source, Source)
    assert [(i, r["messages"][1]["content"]) for i, r in source] == [(0, "a")]


def test_jsonl_numeric_answer_becomes_text():
    """`datasets`' JSON reader can type a bare numeric answer as a number; it is still the answer text."""
    from smolvlm_cli.data.adapters import from_jsonl

    row = {"messages": [{"role": "user", "content": "What is 3 plus 4?"}, {"role": "assistant", "content": 7}]}
    sample = from_jsonl(row, index=0, source="s")
    assert sample.turns[1].parts[0].text == "7"

# Rows in the published schema of every source the release recipes' video stage reads (one builder per source), and
# small local copies of those sources (data files + media roots) with the `--set` overrides that point a recipe at them.
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

# ---------------------------------------------------------------------------------------------------------------
# Media
# ---------------------------------------------------------------------------------------------------------------


def mp4_bytes(colour: tuple[int, int, int] = (255, 0, 0), frames: int = 2, size: int = 16, fps: int = 2) -> bytes:
    """A real H.264 mp4 (first frame black, then `colour`), written by the project's own synthetic-video writer."""
    import tempfile

    from smolvlm_cli.data.synthetic import write_mp4

    pixels = np.zeros((frames, size, size, 3), dtype=np.uint8)
    pixels[1:] = colour
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v.mp4"
        write_mp4(path, pixels, fps=fps)
        return path.read_bytes()


def write_media(root: Path, videos: Iterable[str] = (), images: dict[str, tuple[int, int, int]] | None = None,
                mp4: bytes | None = None, image_size: tuple[int, int] = (8, 6)) -> Path:
    """Lay out a media root as a source's extracted archives are: `videos` (relative paths, all holding `mp4`) and
    `images` (relative path -> RGB colour of a plain image)."""
    from PIL import Image as PILImage

    for rel in videos:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(mp4 if mp4 is not None else mp4_bytes())
    for rel, colour in (images or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        PILImage.new("RGB", image_size, colour).save(root / rel)
    return root


# ---------------------------------------------------------------------------------------------------------------
# Row builders: one per source, in its published schema; the defaults are the rows the unit tests assert on
# ---------------------------------------------------------------------------------------------------------------


def convo(*turns: tuple[str, str]) -> list[dict]:
    return [{"from": who, "value": value} for who, value in turns]


def llava_onevision_row(image: Any = None, *, id: str = "ov-1", question: str = "How many cubes?",
                        answer: str = "3", data_source: str = "CLEVR-Math(MathV360K)") -> dict:
    """LLaVA-OneVision-Data parquet: the image embedded (PIL, or {bytes, path}); None for a text-only row."""
    prompt = question if image is None else f"<image>\n{question}"
    return {"id": id, "image": image, "data_source": data_source,
            "conversations": convo(("human", prompt), ("gpt", answer))}


def llava_onevision_features():
    import datasets

    return datasets.Features({
        "id": datasets.Value("string"), "image": datasets.Image(),
        "conversations": datasets.List({"from": datasets.Value("string"), "value": datasets.Value("string")}),
        "data_source": datasets.Value("string"),
    })


def mammoth_vl_row(*, id: str = "si-1", image: str | list[str] | None = "single_image_data/a.jpg",
                   video: str | None = None, question: str = "What colour?", answer: str = "Rationale... Red.") -> dict:
    """MAmmoTH-VL mammoth_si_10M.json / mammoth_ov_2M.json: a path (or list) under `image`, or one under `video`."""
    if video is not None:
        return {"id": id, "video": video, "conversations": convo(("human", f"<video>\n{question}"), ("gpt", answer))}
    tags = "<image>" * (len(image) if isinstance(image, list) else 1)
    return {"id": id, "image": image, "conversations": convo(("human", f"{tags}\n{question}"), ("gpt", answer))}


def m4_instruct_row(*, id: str = "m4-1", images: list[str] | None = None, dataset: str = "spot-the-diff",
                    turns: list[tuple[str, str]] | None = None) -> dict:
    """M4-Instruct m4_instruct_annotations.json: a list of images, `metadata.dataset` names the sub-dataset."""
    images = images if images is not None else ["spot-the-diff/1_1.jpg", "spot-the-diff/1_2.jpg"]
    tags = "<image>" * len(images)
    turns = turns if turns is not None else [("human", f"{tags}\nWhat changed?"), ("gpt", "The car left.")]
    return {"id": id, "image": images, "metadata": {"dataset": dataset, "split": "train", "num_sample": len(images)},
            "conversations": convo(*turns)}


LLAVA_VIDEO_TURNS = (("Describe what the person does.", "The person opens a door."), ("Then?", "Leaves."))


def llava_video_row(*, id: str = "Q04US", video: str = "academic_source/Charades/Q04US.mp4",
                    data_source: str = "30_60_s_academic_v0_1",
                    turns: tuple[tuple[str, str], ...] = LLAVA_VIDEO_TURNS) -> dict:
    """LLaVA-Video-178K *_processed.json: the video marked with <image> in the first question."""
    pairs = [(("human", f"<image>\n{q}" if k == 0 else q), ("gpt", a)) for k, (q, a) in enumerate(turns)]
    return {"id": id, "data_source": data_source, "video": video,
            "conversations": convo(*[t for pair in pairs for t in pair])}


def video_star_row(*, video: str = "Kinetics700/JDKf63ARWuY_000017_000027.mp4", key: str = "video_path",
                   question_id: str = "k700-17", question: str = "What is the person doing?",
                   answer: str = "They juggle balls.") -> dict:
    """Video-STaR (its generation code's record): the video under `video_path` (`video_name` in the demo's JSON)."""
    return {key: video, "question": question, "question_id": question_id,
            "label": {"action": ["juggling balls"]}, "label_type": "action", "output": answer, "rationale": True,
            "cls_correct": True, "qa_type": "qa",
            "conversations": convo(("human", f"<video>\n{question}"), ("gpt", answer))}


def vista_row(*, video: str = "temporal_niah/v_0001.mp4",
              question: str = "What colour is the needle frame?\nA. red B. blue", answer: str = "A") -> dict:
    """VISTA-400K: LLaVA JSON whose `image` holds the video's path, with no placeholder."""
    return {"image": video, "conversations": convo(("human", question), ("gpt", answer))}


def finevideo_row(mp4: bytes, *, qa: bool = True, as_str: bool = False, name: str = "zdj0yyoEz7I",
                  category: str = "Sports", description: str = "A player dunks.") -> dict:
    """FineVideo: the mp4's bytes and a `json` struct (a JSON string when streamed)."""
    info = {
        "content_parent_category": category, "content_fine_category": "Basketball",
        "original_json_filename": f"{name}.json",
        "content_metadata": {
            "title": "A dunk", "description": description, "fps": 2.0, "characterList": [],
            "qAndA": [{"question": "Who scores?", "answer": "The player in red."},
                      {"question": "How?", "answer": "With a dunk."}] if qa else [],
            "scenes": [{"sceneId": 1, "title": "Dunk", "activities": []}],
        },
    }
    return {"mp4": mp4, "json": json.dumps(info) if as_str else info}


def _vript_clip(video_id: str, n: int, content: str) -> dict:
    return {"video_id": video_id, "clip_id": f"{video_id}-Scene-{n:03d}", "video_title": "Cooking",
            "caption": {"shot_type": "close-up", "camera_movement": "static", "content": content,
                        "scene_title": f"Step {n}"}, "voiceover": ["..."]}


def vript_video_row(*, video_id: str = "339dXVNQXac", scenes: dict[int, str] | None = None) -> dict:
    """Vript per-video caption file: {meta, data: {clip_id: clip}}; the clips in the file's (any) order."""
    scenes = scenes if scenes is not None else {2: "Eggs are cracked.", 1: "A pan heats."}
    clips = [_vript_clip(video_id, n, content) for n, content in scenes.items()]
    return {"meta": {"video_id": video_id, "video_title": "Cooking", "num_clips": len(clips), "integrity": True},
            "data": {c["clip_id"]: c for c in clips}}


def vript_clip_row(*, video_id: str = "339dXVNQXac", n: int = 2, content: str = "Eggs are cracked.") -> dict:
    """Vript per-clip row: one scene of `<video_id>/<clip_id>.mp4`."""
    return {**_vript_clip(video_id, n, content), "voiceover": ["Now the eggs."]}


def moviechat_row(*, name: str = "1.mp4", caption: str = "Two friends talk in a cafe.",
                  global_qa: tuple[tuple[str, str], ...] = (("Is it day?", "Yes."),)) -> dict:
    """MovieChat-1K jsons/<n>.json: info, a caption, global and breakpoint Q/A."""
    return {"info": {"video_path": name, "url": f"https://example.org/{Path(name).stem}", "class": "drama",
                     "w": 1280, "h": 720, "fps": 24.0, "num_frame": 9000},
            "global": [{"question": q, "answer": a} for q, a in global_qa],
            "breakpoint": [{"time": 3200, "question": "What is he holding?", "answer": "A cup."}],
            "caption": caption}


def sharegpt4video_row(*, video_id: str = "12345", folder: str = "pexels",
                       caption: str = "The video opens with a bird.") -> dict:
    """ShareGPT4Video sharegpt4video_40k.jsonl: per-keyframe captions plus the whole-video one (idx -1)."""
    return {"video_id": video_id, "video_path": f"{folder}/{video_id}.mp4",
            "zip_folder": f"zip_folder/{folder}/{folder}_videos_1.zip",
            "captions": [{"idx": "0", "content": "A frame."}, {"idx": "-1", "content": caption}],
            "timestamp": [0.0, 1.5], "keyframe": [0, 36]}


def tulu_row(*, id: str = "oasst1_6668", system: str | None = "Be brief.", user: str = "2+2?",
             assistant: str = "4") -> dict:
    """tulu-3-sft-mixture: id, source, `messages` of {role, content}."""
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return {"id": id, "source": "ai2-adapt-dev/oasst1_converted", "messages": messages}


def smoltalk_row(*, system: str = "Be brief.", user: str = "2+2?", assistant: str = "4") -> dict:
    """SmolTalk: `messages` and `source`, no id."""
    return {"source": "smol-magpie-ultra",
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user},
                         {"role": "assistant", "content": assistant}]}


# ---------------------------------------------------------------------------------------------------------------
# Local copies of the 256M/500M recipes' video-stage sources
# ---------------------------------------------------------------------------------------------------------------

VIDEO_STAGE_SOURCES = ("llava_video", "finevideo", "video_star", "vript", "vista", "moviechat", "sharegpt4video",
                       "llava_onevision", "mammoth_vl", "m4_instruct", "text_sft")
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]


def _write_json(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1))
    return path


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _write_parquet(path: Path, rows: list[dict], features=None) -> Path:
    import datasets

    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(rows, features=features).to_parquet(str(path))
    return path


def write_release_fixtures(root: Path, *, streaming: bool | None = False, video_size: int = 32,
                           video_frames: int = 4) -> dict[str, dict[str, Any]]:
    """Write ~4 rows of each video-stage source, in the format of its released files, with its media under
    `root/NAME/media`. Returns NAME -> the SourceSpec fields to set (`overrides` turns them into --set arguments):
    path, media_root, config (cleared: a local file has no hub subset), split where the recipe names one, and
    streaming (None: keep the recipe's, which streams FineVideo and MAmmoTH-VL from these local files too)."""
    import io

    from PIL import Image as PILImage

    root = Path(root)
    mp4s = [mp4_bytes(c, frames=video_frames, size=video_size) for c in COLOURS]
    specs: dict[str, dict[str, Any]] = {}

    def media(name: str, videos: Iterable[str] = (), images: dict | None = None) -> Path:
        base = root / name / "media"
        base.mkdir(parents=True, exist_ok=True)
        for k, rel in enumerate(videos):
            write_media(base, [rel], mp4=mp4s[k % len(mp4s)])
        write_media(base, images=images or {}, image_size=(24, 16))
        return base

    def spec(name: str, path: Path, base: Path | None, **extra) -> None:
        fields = {"path": str(path), "media_root": str(base) if base else None, "config": None, **extra}
        specs[name] = fields if streaming is None else {**fields, "streaming": streaming}

    # LLaVA-Video-178K: <subset>/<subset>_oe_qa_processed.json, videos under the subset's extracted tars
    videos = [f"academic_source/Charades/{v}.mp4" for v in ("Q04US", "A1B2C", "Z9Y8X", "K7L6M")]
    rows = [llava_video_row(id=Path(v).stem, video=v, data_source="0_30_s_academic_v0_1",
                            turns=((f"What happens in clip {k}?", f"Event {k}."), ("Then?", "It ends.")))
            for k, v in enumerate(videos)]
    spec("llava_video", _write_json(root / "llava_video" / "0_30_s_academic_oe_v0_1_qa_processed.json", rows),
         media("llava_video", videos), split="train")

    # FineVideo: parquet shards with the mp4 bytes in the row; in-row videos are written under the media root
    rows = [finevideo_row(mp4s[k], name=f"fv{k:04d}", qa=k != 3, description=f"Clip {k} of a game.")
            for k in range(4)]
    spec("finevideo", _write_parquet(root / "finevideo" / "data" / "train-00000-of-00001.parquet", rows),
         media("finevideo"))

    # Video-STaR: JSON records from its generation code (video_path) and its demo (video_name)
    videos = [f"Kinetics700/clip{k}_000017_000027.mp4" for k in range(4)]
    rows = [video_star_row(video=v, key="video_path" if k % 2 == 0 else "video_name", question_id=f"k700-{k}",
                           question=f"What is the person doing in clip {k}?", answer=f"Action {k}.")
            for k, v in enumerate(videos)]
    spec("video_star", _write_json(root / "video_star" / "Kinetics700.json", rows), media("video_star", videos))

    # Vript: per-video caption files gathered in a JSONL (each video's clip ids are its own columns)
    ids = ["339dXVNQXac", "aaaaaaaaaaa", "bbbbbbbbbbb", "ccccccccccc"]
    rows = [vript_video_row(video_id=v, scenes={2: f"Video {k}, scene two.", 1: f"Video {k}, scene one."})
            for k, v in enumerate(ids)]
    spec("vript", _write_jsonl(root / "vript" / "vript_captions.jsonl", rows),
         media("vript", [f"{v}.mp4" for v in ids]))

    # VISTA-400K: LLaVA JSON, the video's path under `image`
    videos = [f"temporal_niah/v_{k:04d}.mp4" for k in range(4)]
    rows = [vista_row(video=v, question=f"Which colour is frame {k}?\nA. red B. blue", answer="AB"[k % 2])
            for k, v in enumerate(videos)]
    spec("vista", _write_json(root / "vista" / "temporal_niah.json", rows), media("vista", videos))

    # MovieChat-1K: a folder of per-movie JSON files (jsons/<n>.json), videos in raw_videos/
    for k in range(1, 5):
        path = root / "moviechat" / "jsons" / f"{k}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(moviechat_row(name=f"{k}.mp4", caption=f"Scene {k} of a movie.",
                                                 global_qa=((f"Is movie {k} in colour?", "Yes."),)), indent=2))
    spec("moviechat", root / "moviechat" / "jsons", media("moviechat", [f"raw_videos/{k}.mp4" for k in range(1, 5)]))

    # ShareGPT4Video: sharegpt4video_40k.jsonl, videos where the zip_folder archives were extracted
    folders = ["pexels", "pixabay", "mixkit", "pexels"]
    rows = [sharegpt4video_row(video_id=f"{k}000{k}", folder=f, caption=f"The video {k} opens with a bird.")
            for k, f in enumerate(folders)]
    spec("sharegpt4video", _write_jsonl(root / "sharegpt4video" / "sharegpt4video_40k.jsonl", rows),
         media("sharegpt4video", [r["video_path"] for r in rows]))

    # LLaVA-OneVision-Data: <subset>/train-*.parquet with the images embedded; text-only rows have none
    def png(colour) -> dict:
        buf = io.BytesIO()
        PILImage.new("RGB", (24, 16), colour).save(buf, format="PNG")
        return {"bytes": buf.getvalue(), "path": None}

    rows = [llava_onevision_row(png(COLOURS[k]), id=f"ov-{k}", question=f"How many cubes in {k}?", answer=str(k))
            for k in range(3)] + [llava_onevision_row(None, id="mg-3", question="Hi", answer="Hello",
                                                      data_source="magpie_pro")]
    spec("llava_onevision", _write_parquet(root / "llava_onevision" / "CLEVR-Math(MathV360K)" /
                                           "train-00000-of-00001.parquet", rows, llava_onevision_features()),
         media("llava_onevision"))

    # MAmmoTH-VL: mammoth_ov_2M.json mixes single-image, multi-image and video rows
    images = {"single_image_data/a.jpg": COLOURS[0], "single_image_data/b.jpg": COLOURS[1],
              "spot-the-diff/1_1.jpg": COLOURS[2], "spot-the-diff/1_2.jpg": COLOURS[3]}
    rows = [mammoth_vl_row(id="si-1"),
            mammoth_vl_row(id="mi-1", image=["spot-the-diff/1_1.jpg", "spot-the-diff/1_2.jpg"], question="Same?",
                           answer="No."),
            mammoth_vl_row(id="v-1", video="video_data/clip.mp4", question="What happens?", answer="A flash."),
            mammoth_vl_row(id="si-2", image="single_image_data/b.jpg", answer="Green.")]
    spec("mammoth_vl", _write_json(root / "mammoth_vl" / "mammoth_ov_2M.json", rows),
         media("mammoth_vl", ["video_data/clip.mp4"], images))

    # M4-Instruct: m4_instruct_annotations.json, image lists; one record starts with a gpt turn (relabelled)
    images = {f"{d}/{k}_{j}.jpg": COLOURS[(k + j) % len(COLOURS)] for d in ("spot-the-diff", "nlvr2")
              for k in (1, 2) for j in (1, 2)}
    rows = [m4_instruct_row(id=f"m4-{k}", dataset=d, images=[f"{d}/{n}_1.jpg", f"{d}/{n}_2.jpg"])
            for k, (d, n) in enumerate([("spot-the-diff", 1), ("spot-the-diff", 2), ("nlvr2", 1)])]
    rows.append(m4_instruct_row(id="m4-3", dataset="nlvr2", images=["nlvr2/2_1.jpg", "nlvr2/2_2.jpg"],
                                turns=[("gpt", "<image><image>\nBoth dogs?"), ("gpt", "Yes.")]))
    spec("m4_instruct", _write_json(root / "m4_instruct" / "m4_instruct_annotations.json", rows),
         media("m4_instruct", images=images))

    # tulu-3-sft-mixture: data/train-*.parquet of `messages`
    rows = [tulu_row(id=f"oasst1_{k}", system="Be brief." if k % 2 else None, user=f"{k}+{k}?",
                     assistant=str(2 * k)) for k in range(4)]
    spec("text_sft", _write_parquet(root / "text_sft" / "data" / "train-00000-of-00001.parquet", rows), None)
    return specs


def overrides(specs: dict[str, dict[str, Any]]) -> list[str]:
    """`sources.NAME.FIELD=VALUE` for `--set` (YAML values: null, false, paths as plain strings)."""
    out = []
    for name, fields in specs.items():
        for field, value in fields.items():
            text = "null" if value is None else json.dumps(value) if isinstance(value, bool) else str(value)
            out.append(f"sources.{name}.{field}={text}")
    return out

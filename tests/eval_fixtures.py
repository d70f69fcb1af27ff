# A few rows per eval benchmark in the hub datasets' real columns, written as parquet (and tiny mp4 videos) by tests.
# GOLD holds, per task, an answer that scores 1.0 for each row, in row order.
from __future__ import annotations

from pathlib import Path

import numpy as np

COLOURS = [(220, 30, 30), (30, 70, 220), (30, 170, 60), (235, 200, 20)]


def image(i: int, size=(48, 32)):
    from PIL import Image

    return Image.new("RGB", size, COLOURS[i % len(COLOURS)])


def write_mp4(path: Path, n_frames: int = 8, fps: int = 4, size=(32, 24), seed: int = 0) -> Path:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for _ in range(n_frames):
            frame = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _write(folder: Path, split: str, rows: list[dict], features: dict) -> Path:
    import datasets

    datasets.disable_progress_bars()
    folder.mkdir(parents=True, exist_ok=True)
    columns = {k: [r[k] for r in rows] for k in features}
    ds = datasets.Dataset.from_dict(columns, features=datasets.Features(features))
    path = folder / f"{split}-00000-of-00001.parquet"
    ds.to_parquet(str(path))
    return path


def _f():
    import datasets

    S, I, L = datasets.Value("string"), datasets.Image(), datasets.Sequence
    return datasets, S, I, L


def write_benchmarks(root: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Parquet folders for the 14 benchmarks and media folders for the video ones; returns
    (dataset_paths, media_roots) keyed by task name."""
    ds, S, I, L = _f()
    i64, f64 = ds.Value("int64"), ds.Value("float64")
    paths: dict[str, Path] = {}

    paths["docvqa"] = root / "docvqa"
    _write(paths["docvqa"] / "DocVQA", "validation", [
        {"questionId": "q1", "question": "What is the date?", "question_types": ["handwritten"], "image": image(0),
         "docId": 1, "ucsf_document_id": "abc", "ucsf_document_page_no": "1", "answers": ["June 1", "1 June"],
         "data_split": "val"},
        {"questionId": "q2", "question": "Who signed?", "question_types": ["form"], "image": image(1),
         "docId": 2, "ucsf_document_id": "abd", "ucsf_document_page_no": "2", "answers": ["J. Smith"],
         "data_split": "val"},
    ], {"questionId": S, "question": S, "question_types": L(S), "image": I, "docId": i64, "ucsf_document_id": S,
        "ucsf_document_page_no": S, "answers": L(S), "data_split": S})

    paths["textvqa"] = root / "textvqa"
    _write(paths["textvqa"], "validation", [
        {"image_id": "img1", "question_id": 11, "question": "what brand is the bottle?", "question_tokens":
         ["what", "brand"], "image": image(2), "image_width": 48, "image_height": 32, "flickr_original_url": "",
         "flickr_300k_url": "", "answers": ["coca cola"] * 7 + ["coke"] * 3, "image_classes": ["Bottle"],
         "set_name": "val", "ocr_tokens": ["coca", "cola"]},
        {"image_id": "img2", "question_id": 12, "question": "how many cans?", "question_tokens": ["how"],
         "image": image(3), "image_width": 48, "image_height": 32, "flickr_original_url": "", "flickr_300k_url": "",
         "answers": ["2"] * 10, "image_classes": ["Tin can"], "set_name": "val", "ocr_tokens": []},
    ], {"image_id": S, "question_id": i64, "question": S, "question_tokens": L(S), "image": I, "image_width": i64,
        "image_height": i64, "flickr_original_url": S, "flickr_300k_url": S, "answers": L(S),
        "image_classes": L(S), "set_name": S, "ocr_tokens": L(S)})

    paths["chartqa"] = root / "chartqa"
    _write(paths["chartqa"], "test", [
        {"type": "human_test", "question": "What is the highest value?", "answer": "12", "image": image(0)},
        {"type": "augmented_test", "question": "Is A larger than B?", "answer": "Yes", "image": image(1)},
    ], {"type": S, "question": S, "answer": S, "image": I})

    paths["ocrbench"] = root / "ocrbench"
    _write(paths["ocrbench"], "test", [
        {"dataset": "IIIT5K", "question": "what is written in the image?", "question_type":
         "Regular Text Recognition", "answer": ["Hello"], "image": image(0)},
        {"dataset": "HME100k", "question": "Please write out the expression of the formula in the image using "
         "LaTeX format.", "question_type": "Handwritten Mathematical Expression Recognition",
         "answer": ["x^{2}"], "image": image(1)},
    ], {"dataset": S, "question": S, "question_type": S, "answer": L(S), "image": I})

    paths["ai2d"] = root / "ai2d"
    _write(paths["ai2d"], "test", [
        {"question": "Which part is the leaf?", "options": ["root", "stem", "leaf", "flower"], "answer": "2",
         "image": image(2)},
        {"question": "What eats the grass?", "options": ["rabbit", "fox"], "answer": "0", "image": image(3)},
    ], {"question": S, "options": L(S), "answer": S, "image": I})

    paths["scienceqa"] = root / "scienceqa"
    sqa = {"task": "closed choice", "grade": "grade2", "subject": "natural science", "topic": "biology",
           "category": "Classify", "skill": "x", "lecture": "", "solution": ""}
    _write(paths["scienceqa"] / "ScienceQA-IMG", "test", [
        {"image": image(0), "question": "Is the animal a mammal?", "choices": ["yes", "no"], "answer": 1,
         "hint": "Look at the picture.", **sqa},
        {"image": image(1), "question": "Which is a plant?", "choices": ["rock", "tree", "cup"], "answer": 1,
         "hint": "", **sqa},
    ], {"image": I, "question": S, "choices": L(S), "answer": i64, "hint": S, **{k: S for k in sqa}})

    paths["mmmu"] = root / "mmmu"
    no_images = {f"image_{k}": None for k in range(1, 8)}
    mmmu_cols = {"id": S, "question": S, "options": S, "explanation": S, **{f"image_{k}": I for k in range(1, 8)},
                 "img_type": S, "answer": S, "topic_difficulty": S, "question_type": S, "subfield": S}
    _write(paths["mmmu"], "validation", [
        {"id": "validation_Art_1", "question": "Which painting is shown in <image 1>?", "options":
         "['Mona Lisa', 'Starry Night', 'Scream', 'Guernica']", "explanation": "", **no_images, "image_1": image(0),
         "img_type": "['Paintings']", "answer": "B", "topic_difficulty": "Easy", "question_type": "multiple-choice",
         "subfield": "Art History"},
        {"id": "validation_Math_2", "question": "What is <image 1> plus <image 2>?", "options": "[]",
         "explanation": "", **no_images, "image_1": image(1), "image_2": image(2), "img_type": "['Diagrams']",
         "answer": "7", "topic_difficulty": "Easy", "question_type": "open", "subfield": "Algebra"},
    ], mmmu_cols)

    paths["mathvista"] = root / "mathvista"
    meta = {"split": "testmini", "source": "x", "category": "math-targeted-vqa", "task": "figure question answering",
            "context": "synthetic scene", "grade": "elementary school", "skills": ["arithmetic reasoning"]}
    mv_cols = {"pid": S, "question": S, "image": S, "decoded_image": I, "choices": L(S), "unit": S, "precision": f64,
               "answer": S, "question_type": S, "answer_type": S,
               "metadata": {"split": S, "source": S, "category": S, "task": S, "context": S, "grade": S,
                            "skills": L(S)},
               "query": S}
    _write(paths["mathvista"], "testmini", [
        {"pid": "1", "question": "What fraction of the shape is blue?", "image": "images/1.jpg",
         "decoded_image": image(1), "choices": ["3/11", "8/11", "6/11", "3/5"], "unit": None, "precision": None,
         "answer": "8/11", "question_type": "multi_choice", "answer_type": "text", "metadata": meta,
         "query": "Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the "
                  "end.\nQuestion: What fraction of the shape is blue?\nChoices:\n(A) 3/11\n(B) 8/11\n(C) 6/11\n"
                  "(D) 3/5"},
        {"pid": "2", "question": "How many cubes are there?", "image": "images/2.jpg", "decoded_image": image(2),
         "choices": None, "unit": None, "precision": None, "answer": "5", "question_type": "free_form",
         "answer_type": "integer", "metadata": meta,
         "query": "Hint: Please answer the question requiring an integer answer and provide the final value, e.g., "
                  "1, 2, 3, at the end.\nQuestion: How many cubes are there?"},
        {"pid": "3", "question": "What is the length of the bar?", "image": "images/3.jpg",
         "decoded_image": image(3), "choices": None, "unit": "cm", "precision": 1.0, "answer": "0.6",
         "question_type": "free_form", "answer_type": "float", "metadata": meta,
         "query": "Hint: Please answer the question requiring a floating-point number with one decimal place and "
                  "provide the final value, e.g., 1.2, 1.3, 1.4, at the end.\nQuestion: What is the length of the "
                  "bar? (Unit: cm)"},
    ], mv_cols)

    paths["mmstar"] = root / "mmstar"
    star = lambda i, q, a, cat, l2: {  # noqa: E731
        "index": i, "question": q + "\nOptions: A: red, B: blue, C: green, D: white", "image": image(i),
        "answer": a, "category": cat, "l2_category": l2,
        "meta_info": {"source": "x", "split": "val", "image_path": f"images/{i}.jpg"}}
    _write(paths["mmstar"], "val", [
        star(0, "Which colour is the car?", "A", "coarse perception", "image scene and topic"),
        star(1, "Which colour is the sky?", "B", "coarse perception", "image scene and topic"),
        star(2, "Which colour is the leaf?", "C", "math", "geometry"),
    ], {"index": i64, "question": S, "image": I, "answer": S, "category": S, "l2_category": S,
        "meta_info": {"source": S, "split": S, "image_path": S}})

    media: dict[str, Path] = {}
    media["videomme"] = root / "media" / "videomme"
    write_mp4(media["videomme"] / "data" / "vidA.mp4", seed=1)
    write_mp4(media["videomme"] / "vidB.mp4", seed=2)
    paths["videomme"] = root / "videomme"
    vm = {"duration": "short", "domain": "Knowledge", "sub_category": "Astronomy", "url": "", "task_type":
          "Counting Problem", "options": ["A. 1", "B. 2", "C. 3", "D. 4"]}
    _write(paths["videomme"] / "videomme", "test", [
        {"video_id": "001", "videoID": "vidA", "question_id": "001-1", "question": "How many stars are there?",
         "answer": "B", **vm},
        {"video_id": "002", "videoID": "vidB", "question_id": "002-1", "question": "How many planets are there?",
         "answer": "D", **vm},
    ], {"video_id": S, "duration": S, "domain": S, "sub_category": S, "url": S, "videoID": S, "question_id": S,
        "task_type": S, "question": S, "options": L(S), "answer": S})

    media["mlvu"] = root / "media" / "mlvu"
    write_mp4(media["mlvu"] / "plotQA" / "m1.mp4", seed=3)
    write_mp4(media["mlvu"] / "count" / "m2.mp4", seed=4)
    paths["mlvu"] = root / "mlvu"
    _write(paths["mlvu"], "test", [
        {"video_name": "plotQA/m1.mp4", "duration": 2.0, "question": "What colour is the screen?",
         "candidates": ["red", "blue", "green", "white"], "answer": "B", "task_type": "plotQA", "question_id": "m1"},
        {"video_name": "plotQA/m1.mp4", "duration": 2.0, "question": "What shape is shown?\n(A) circle\n(B) star",
         "candidates": ["circle", "star"], "answer": "A", "task_type": "plotQA", "question_id": "m1b"},
        {"video_name": "count/m2.mp4", "duration": 2.0, "question": "How many dogs appear?",
         "candidates": ["1", "2", "3", "4"], "answer": "C", "task_type": "count", "question_id": "m2"},
    ], {"video_name": S, "duration": f64, "question": S, "candidates": L(S), "answer": S, "task_type": S,
        "question_id": S})

    media["mvbench"] = root / "media" / "mvbench"
    write_mp4(media["mvbench"] / "star" / "Charades_segment" / "a1.mp4", seed=5)
    write_mp4(media["mvbench"] / "clevrer" / "video_validation" / "c1.mp4", seed=6)
    paths["mvbench"] = root / "mvbench"
    mvb = {"video": S, "question": S, "candidates": L(S), "answer": S}
    _write(paths["mvbench"] / "action_sequence", "train", [
        {"video": "a1.mp4", "question": "What did the person do first?", "candidates":
         ["Opened the door.", "Sat on the bed.", "Took the cup."], "answer": "Sat on the bed."},
        {"video": "a1.mp4", "question": "What did the person do last?", "candidates":
         ["Opened the door.", "Sat on the bed."], "answer": "Opened the door."},
    ], mvb)
    _write(paths["mvbench"] / "moving_count", "train", [
        {"video": "c1.mp4", "question": "How many metal objects enter the scene?", "candidates": ["0", "1", "2"],
         "answer": "2"},
    ], mvb)

    media["tempcompass"] = root / "media" / "tempcompass"
    write_mp4(media["tempcompass"] / "t1.mp4", seed=7)
    paths["tempcompass"] = root / "tempcompass"
    tc = {"video_id": S, "question": S, "answer": S, "dim": S}
    _write(paths["tempcompass"] / "multi-choice", "test", [
        {"video_id": "t1", "question": "What is moving?\nA. car\nB. dog", "answer": "B. dog", "dim": "action"}], tc)
    _write(paths["tempcompass"] / "yes_no", "test", [
        {"video_id": "t1", "question": "Is the dog moving to the left?", "answer": "yes", "dim": "direction"}], tc)
    _write(paths["tempcompass"] / "caption_matching", "test", [
        {"video_id": "t1", "question": "Which caption matches the video better?\nCaption A: a dog runs\n"
         "Caption B: a cat sleeps", "answer": "Caption A: a dog runs", "dim": "speed"}], tc)

    media["worldsense"] = root / "media" / "worldsense"
    write_mp4(media["worldsense"] / "videos" / "w1.mp4", seed=8)
    paths["worldsense"] = root / "worldsense"
    _write(paths["worldsense"], "test", [
        {"index": "w1", "video_path": "videos/w1.mp4", "question": "What is shown?", "candidates":
         ["A. a dog", "B. a cat", "C. a car", "D. a tree"], "answer": "C", "task_type": "Object Counting",
         "task_domain": "Daily Life", "duration": "<1min", "audio_class": ["speech"]},
        {"index": "w2", "video_path": "videos/w1.mp4", "question": "What colour dominates?", "candidates":
         ["A. red", "B. blue", "C. green", "D. pink"], "answer": "D", "task_type": "Attribute Recognition",
         "task_domain": "Daily Life", "duration": "<1min", "audio_class": ["music"]},
    ], {"index": S, "video_path": S, "question": S, "candidates": L(S), "answer": S, "task_type": S,
        "task_domain": S, "duration": S, "audio_class": L(S)})
    return paths, media


# One answer per row (row order) that scores 1.0 under the task's official rule.
GOLD = {
    "docvqa": ["1 June", "J. Smith"],
    "textvqa": ["Coca-Cola", "two"],
    "chartqa": ["12.3", "yes"],
    "ocrbench": ["The word is HELLO", "x ^ {2}"],
    "ai2d": ["C", "A."],
    "scienceqa": ["B", "B. tree"],
    "mmmu": ["(B) Starry Night", "The answer is 7"],
    "mathvista": ["B", "5", "0.60"],
    "mmstar": ["A", "(B)", "C. green"],
    "videomme": ["The best answer is B", "D"],
    "mlvu": ["B) blue", "A", "C"],
    "mvbench": ["(B) Sat on the bed.", "A", "(C)"],
    "tempcompass": ["B", "yes", "Caption A"],
    "worldsense": ["C", "D. pink"],
}


def write_eval_data(root: Path, n_test: int) -> tuple[dict[str, Path], dict[str, Path]]:
    """The benchmark fixtures plus a synthetic set with `n_test` held-out items per task: (dataset_paths keyed by
    task name and "synthetic", media_roots)."""
    from smolvlm_cli.data.synthetic import write_synthetic

    paths, media = write_benchmarks(root)
    write_synthetic(root / "synthetic", n_train=1, n_test=n_test, seed=0, image_size=32)
    return {**paths, "synthetic": root / "synthetic"}, media

# Video benchmarks of the SmolVLM paper: row schema + a media folder -> prompt -> rule-based score.
# Videos are found under --media-root TASK=FOLDER in the layout lmms-eval unpacks them to; frames are sampled later.
from __future__ import annotations

import re
from pathlib import Path

from ..errors import MediaError, UserError
from . import metrics as m
from .tasks import BuildContext, Item, Task, TaskResult, group_means, letters, macro, mean, micro, row_id, text_part

# VLMEvalKit's system prompts (its SmolVLM2 builder uses the last one when a dataset gives none).
SYS_WATCH_EVENTS = ("Carefully watch the video and pay attention to the cause and sequence of events, the detail and "
                    "movement of objects, and the action and pose of persons. Based on your observations, select the "
                    "best option that accurately addresses the question.")
SYS_WATCH_DETAIL = ("Carefully watch this video and pay attention to every detail. Based on your observations, "
                    "select the best option that accurately addresses the question.")
SYS_DEFAULT = "pay attention to the video and answer the question"
FRAMES_NOSUB = ("These are the frames of a video. Select the best answer to the following multiple-choice question "
                "based on the video. Respond with only the letter (A, B, C, or D) of the correct option.")
VLM_LETTERS = "respond ONLY with one of the multiple choice letter options (A/B/C/D):"


def resolve_video(ctx: BuildContext, *relative: str) -> str:
    """The first of the candidate paths that exists under the task's media folder (file, or folder of frames)."""
    if ctx.media_root is None:
        raise UserError(f"task '{ctx.task}' reads videos but no media folder was given",
                        f"pass --media-root {ctx.task}=FOLDER (the folder holding the benchmark's videos)")
    for rel in relative:
        path = Path(ctx.media_root) / rel
        if path.exists():
            return str(path)
    raise MediaError(f"video for {ctx.task} not found: {Path(ctx.media_root) / relative[0]}",
                     f"check --media-root {ctx.task}=FOLDER; looked for {', '.join(relative)}")


def _video_item(row: dict, ctx: BuildContext, item_id: str, video: str, text: str, answer: str, meta: dict,
                system: str | None = None, prefix: str = "") -> Item:
    return Item(item_id, [{"type": "video"}, text_part(text)], video=video, system=system, assistant_prefix=prefix,
                answers=[answer], meta=meta)


# --------------------------------------------------------------------------------------------- Video-MME


def _videomme(row: dict, ctx: BuildContext) -> Item:
    vid = row["videoID"]
    video = resolve_video(ctx, *(f"{d}{vid}.{ext}" for d in ("", "data/") for ext in ("mp4", "MP4", "mkv")))
    options = "\n".join(row["options"])
    if ctx.prompt_style == "lmms":
        text = ("Select the best answer to the following multiple-choice question based on the video and the "
                "subtitles. Respond with only the letter (A, B, C, or D) of the correct option.\n"
                f"{row['question']}\n{options}\nThe best answer is:")
        system = None
    else:
        text, system = f"{FRAMES_NOSUB} Question: {row['question']}\n{options}\nAnswer:", SYS_WATCH_EVENTS
    return _video_item(row, ctx, row_id(row, ctx, "question_id"), video, text, row["answer"],
                       {"answer": row["answer"], "duration": row.get("duration"), "task_type": row.get("task_type")},
                       system)


def _videomme_score(pred: str, item: Item) -> float:
    return 1.0 if (m.extract_choice(pred) or "").lower() == item.meta["answer"].lower() else 0.0


# --------------------------------------------------------------------------------------------- MLVU


def _mlvu_letter(answer: str, candidates) -> str:
    if re.fullmatch(r"[A-Z]", answer):
        return answer
    if candidates and answer in candidates:
        return letters(len(candidates))[list(candidates).index(answer)]
    match = re.match(r"^\(([A-Z])\)", answer)
    return match.group(1) if match else answer


def _mlvu(row: dict, ctx: BuildContext) -> Item:
    video = resolve_video(ctx, row["video_name"], f"video/{row['video_name']}")
    candidates = list(row.get("candidates") or [])
    question = row["question"]
    if candidates and "(A)" not in question:
        question += "\n" + "\n".join(f"({l}) {c}" for l, c in zip(letters(len(candidates)), candidates))
    letter = _mlvu_letter(row["answer"], candidates)
    if ctx.prompt_style == "lmms":
        text, system = f"\n{question}\nOnly give the best option.\n\nBest option: (", None
        prefix = ""
    else:
        text, system, prefix = f"Question: {question}\nOnly give the best option.", SYS_WATCH_DETAIL, "Best option: ("
    return _video_item(row, ctx, row_id(row, ctx, "question_id"), video, text, letter,
                       {"answer": letter, "task_type": row.get("task_type")}, system, prefix)


# --------------------------------------------------------------------------------------------- MVBench

# Subset -> folder of its videos in the benchmark's archive (as lmms-eval unpacks it).
MVBENCH_FOLDERS = {
    "action_sequence": "star/Charades_segment", "action_prediction": "star/Charades_segment",
    "action_antonym": "ssv2_video_mp4", "fine_grained_action": "Moments_in_Time_Raw/videos",
    "unexpected_action": "FunQA_test/test", "object_existence": "clevrer/video_validation",
    "object_interaction": "star/Charades_segment", "object_shuffle": "perception/videos",
    "moving_direction": "clevrer/video_validation", "action_localization": "sta/sta_video_segment",
    "scene_transition": "scene_qa/video", "action_count": "perception/videos",
    "moving_count": "clevrer/video_validation", "moving_attribute": "clevrer/video_validation",
    "state_change": "perception/videos", "fine_grained_pose": "nturgbd_convert",
    "character_order": "perception/videos", "egocentric_navigation": "vlnqa",
    "episodic_reasoning": "tvqa/video_fps3_hq_segment", "counterfactual_inference": "clevrer/video_validation",
}


def _mvbench(row: dict, ctx: BuildContext) -> Item:
    subset = ctx.config or ""
    folder = MVBENCH_FOLDERS.get(subset, subset)
    video = resolve_video(ctx, f"{folder}/{row['video']}", f"{subset}/{row['video']}", row["video"])
    candidates = list(row["candidates"])
    options = "".join(f"({l}) {c}\n" for l, c in zip(letters(len(candidates)), candidates))
    letter = letters(len(candidates))[candidates.index(row["answer"])] if row["answer"] in candidates else ""
    if ctx.prompt_style == "lmms":
        text = f"Question:{row['question']}\nOption:\n{options}Answer with the option's letter from the given " \
               "choices directly."
        system, prefix = None, ""
    else:
        text = f"Question: {row['question']}\n{VLM_LETTERS}\n{options}Only give the best option."
        system, prefix = SYS_WATCH_EVENTS, " Answer:"
    return _video_item(row, ctx, row_id(row, ctx, "id"), video, text, letter, {"letter": letter, "subset": subset},
                       system, prefix)


def _mvbench_aggregate(items, scores, predictions=None) -> TaskResult:
    """Per subset: correct / answered, where an empty answer is not counted (as the reference); then the mean."""
    predictions = predictions or ["x"] * len(items)
    kept = [(i, s) for i, s, p in zip(items, scores, predictions) if p != ""]
    subsets = group_means([i for i, _ in kept], [s for _, s in kept], "subset")
    return TaskResult(mean(list(subsets.values())), subsets)


# --------------------------------------------------------------------------------------------- TempCompass

TEMPCOMPASS_PROMPTS = {"multi-choice": "\nPlease directly give the best option:",
                       "yes_no": "\nPlease answer yes or no:",
                       "caption_matching": "\nPlease directly give the best option:"}


def _tempcompass(row: dict, ctx: BuildContext) -> Item:
    video = resolve_video(ctx, f"{row['video_id']}.mp4", f"videos/{row['video_id']}.mp4")
    subset = ctx.config or "multi-choice"
    text = row["question"] + TEMPCOMPASS_PROMPTS[subset]
    system = None if ctx.prompt_style == "lmms" else SYS_DEFAULT
    item_id = row_id(row, ctx, "id") if row.get("id") else f"{subset}-{row['video_id']}-{ctx.index}"
    return _video_item(row, ctx, item_id, video, text, row["answer"],
                       {"answer": row["answer"], "question": row["question"], "subset": subset, "dim": row.get("dim")},
                       system)


def _tempcompass_score(pred: str, item: Item) -> float | None:
    meta = item.meta
    if meta["subset"] == "yes_no":
        return m.tempcompass_yes_no(pred, meta["answer"])
    if meta["subset"] == "caption_matching":
        return m.tempcompass_caption_matching(pred, meta["question"], meta["answer"])
    return m.tempcompass_multi_choice(pred, meta["answer"])


def _tempcompass_aggregate(items, scores, predictions=None) -> TaskResult:
    return TaskResult(mean(scores), group_means(items, scores, "subset"), {"dim": group_means(items, scores, "dim")})


# --------------------------------------------------------------------------------------------- WorldSense

FRAMES_AUDIO = ("\nThese are the frames of a video and the corresponding audio. Select the best answer to the "
                "following multiple-choice question based on the video. Respond with only the letter (A, B, C, or D) "
                "of the correct option.\n")


def _worldsense(row: dict, ctx: BuildContext) -> Item:
    video = resolve_video(ctx, row["video_path"], Path(row["video_path"]).name)
    options = "".join(op + "\n" for op in row["candidates"])
    if ctx.prompt_style == "lmms":
        # lmms-eval's prompt names the audio track although only frames reach the model.
        text, system = SYS_WATCH_DETAIL + FRAMES_AUDIO + row["question"] + "\n" + options, None
    else:
        text, system = f"{FRAMES_NOSUB}\n{row['question']}\n{options}".strip(), SYS_WATCH_DETAIL
    return _video_item(row, ctx, row_id(row, ctx, "index"), video, text, row["answer"],
                       {"answer": row["answer"], "options": list(row["candidates"]),
                        "task_type": row.get("task_type")}, system)


def _worldsense_score(pred: str, item: Item) -> float:
    return 1.0 if m.worldsense_choice(pred, item.meta["options"]) == item.meta["answer"] else 0.0


TASKS = [
    Task("videomme", "Video-MME", "video", "lmms-lab/Video-MME", "test", _videomme, _videomme_score,
         micro("duration"), "letter extraction", "mean", 16, config="videomme", published=(33.7, 42.2),
         note="without subtitles"),
    Task("mlvu", "MLVU", "video", "sy1998/MLVU_dev", "test", _mlvu,
         lambda pred, item: 1.0 if m.mlvu_extract(pred) == item.meta["answer"] else 0.0, macro("task_type"),
         "letter before ')'", "mean over task types", 16, published=(40.6, 47.3)),
    Task("mvbench", "MVBench", "video", "OpenGVLab/MVBench", "train", _mvbench,
         lambda pred, item: m.mvbench_match(pred, item.meta["letter"]), _mvbench_aggregate, "MVBench letter rule",
         "mean over subtasks", 16, configs=tuple(MVBENCH_FOLDERS), published=(32.7, 39.7)),
    Task("tempcompass", "TempCompass", "video", "lmms-lab/TempCompass", "test", _tempcompass, _tempcompass_score,
         _tempcompass_aggregate, "TempCompass matching rules", "mean over questions", 16,
         configs=("multi-choice", "yes_no", "caption_matching"), published=(43.1, 49.0), rule_based_only=True,
         note="rule-based only: answers the rules cannot match score 0 (peers ask an LLM judge); "
              "the captioning subset needs a judge and is left out"),
    Task("worldsense", "WorldSense", "video", "lmms-lab/WorldSense", "test", _worldsense, _worldsense_score,
         micro("task_type"), "WorldSense letter parser", "mean", 1024, published=(29.7, 30.6),
         note="frames only (no audio)"),
]

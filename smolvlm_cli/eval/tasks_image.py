# Image benchmarks of the SmolVLM paper: row schema -> prompt (lmms-eval's or VLMEvalKit's SmolVLM prompts) -> score.
# Prompts and generation lengths follow lmms-eval's task YAMLs; the vlmevalkit style follows VLMEvalKit's SmolVLM
# prompt builders, with which the published numbers were produced.
from __future__ import annotations

import ast
import re
import zlib
from collections import defaultdict

from . import metrics as m
from . import metrics_open as mo
from .tasks import (BuildContext, Item, Task, TaskResult, group_means, image_then_text, letters, mean, micro,
                    row_id, text_part, to_pil)

SHORT_ANSWER = "\nAnswer the question using a single word or phrase."
LETTER_ANSWER = "\nAnswer with the option's letter from the given choices directly."
VLM_ANSWER_PREFIX = " Answer:"  # VLMEvalKit's SmolVLM builders start multiple-choice answers with it

VLM_DOCVQA = ("Give a short and terse answer to the following question. Do not paraphrase or reformat the text you "
              "see in the image. Do not include any full stops. Just give the answer without additional "
              "explanation. Question: ")
VLM_TEXTVQA = ("Answer the following question about the image using as few words as possible. Follow these "
               "additional instructions:\n-Always answer a binary question with Yes or No.\n-When asked what time "
               "it is, reply with the time seen in the image.\n-Do not put any full stops at the end of the "
               "answer.\n-Do not put quotation marks around the answer.\n-An answer with one or two words is "
               "favorable.\n-Do not apply common sense knowledge. The answer can be found in the image.\nQuestion: ")
VLM_CHARTQA = ("For the question below, follow the following instructions:\n-The answer should contain as few words "
               "as possible.\n-Don't paraphrase or reformat the text you see in the image.\n-Answer a binary "
               "question with Yes or No.\n-When asked to give a numerical value, provide a number like 2 instead of "
               "Two.\n-If the final answer has two or more items, provide it in the list format like [1, 2].\n-When "
               "asked to give a ratio, give out the decimal value like 0.25 instead of 1:4.\n-When asked to give a "
               "percentage, give out the whole value like 17 instead of decimal like 0.17%.\n-Don't include any "
               "units in the answer.\n-Do not include any full stops at the end of the answer.\n-Try to include the "
               "full label from the graph when asked about an entity.\nQuestion: ")


def _lmms(ctx: BuildContext) -> bool:
    return ctx.prompt_style == "lmms"


def _options_block(options, fmt: str = "{letter}. {option}") -> str:
    return "\n".join(fmt.format(letter=l, option=o) for l, o in zip(letters(len(options)), options))


def _vlm_mcq(question: str, options, hint: str | None = None) -> str:
    """VLMEvalKit's multiple-choice prompt after SmolVLM's rewrites (Options -> Choices, a shorter instruction)."""
    text = f"Hint: {hint}\n" if hint else ""
    text += f"Question: {question}\nChoices:\n{_options_block(options)}\nAnswer with the letter."
    return text.strip()


# --------------------------------------------------------------------------------------------- DocVQA, TextVQA, ChartQA


def _docvqa(row: dict, ctx: BuildContext) -> Item:
    q = row["question"]
    text = f"{q}{SHORT_ANSWER}" if _lmms(ctx) else VLM_DOCVQA + q.strip()
    answers = list(row["answers"])
    return Item(row_id(row, ctx, "questionId"), image_then_text(1, text), [to_pil(row["image"])], answers=answers,
                meta={"answers": answers})


def _textvqa(row: dict, ctx: BuildContext) -> Item:
    q = row["question"]
    text = f"{q.capitalize()}{SHORT_ANSWER}" if _lmms(ctx) else VLM_TEXTVQA + q.strip()
    answers = list(row["answers"] or [])
    return Item(row_id(row, ctx, "question_id"), image_then_text(1, text), [to_pil(row["image"])], answers=answers,
                meta={"answers": answers})


def _chartqa(row: dict, ctx: BuildContext) -> Item:
    q = row["question"]
    text = f"{q}\nAnswer the question with a single word." if _lmms(ctx) else VLM_CHARTQA + q.strip()
    return Item(row_id(row, ctx, "id"), image_then_text(1, text), [to_pil(row["image"])], answers=[row["answer"]],
                meta={"answer": row["answer"], "type": row.get("type")})


# --------------------------------------------------------------------------------------------- OCRBench


def _ocrbench(row: dict, ctx: BuildContext) -> Item:
    q = row["question"].strip()
    text = q if _lmms(ctx) else q + "\nGive a very brief answer."
    answers = [row["answer"]] if isinstance(row["answer"], str) else list(row["answer"])
    return Item(row_id(row, ctx, "id", "index"), image_then_text(1, text), [to_pil(row["image"])], answers=answers,
                meta={"answers": answers, "dataset": row.get("dataset", ""), "question_type": row.get("question_type")})


def _ocrbench_aggregate(items, scores, predictions=None) -> TaskResult:
    # The benchmark reports points out of 1000 (one per question); as a fraction it is the mean.
    return TaskResult(mean(scores), group_means(items, scores, "question_type"),
                      {"points": int(sum(scores)), "max_points": len(scores)})


# --------------------------------------------------------------------------------------------- AI2D, ScienceQA


def _ai2d(row: dict, ctx: BuildContext) -> Item:
    options = list(row["options"])
    letter = letters(len(options))[int(row["answer"])]
    if _lmms(ctx):
        item = Item("", image_then_text(1, f"{row['question']}\n{_options_block(options)}{LETTER_ANSWER}"))
    else:
        item = Item("", image_then_text(1, _vlm_mcq(row["question"], options)), assistant_prefix=VLM_ANSWER_PREFIX)
    item.id, item.images = row_id(row, ctx, "id"), [to_pil(row["image"])]
    item.answers, item.meta = [letter], {"letter": letter}
    return item


def _scienceqa(row: dict, ctx: BuildContext) -> Item:
    choices, hint = list(row["choices"]), row.get("hint") or ""
    letter = letters(len(choices))[int(row["answer"])]
    image = to_pil(row.get("image"))
    images = [image] if image is not None else []
    if _lmms(ctx):
        context = f"Context: {hint}\n" if hint else ""
        item = Item("", image_then_text(len(images), f"{context}{row['question']}\n{_options_block(choices)}"
                                                     f"{LETTER_ANSWER}"))
    else:
        item = Item("", image_then_text(len(images), _vlm_mcq(row["question"], choices, hint)),
                    assistant_prefix=VLM_ANSWER_PREFIX)
    item.id, item.images, item.answers = row_id(row, ctx, "id"), images, [letter]
    item.meta = {"letter": letter, "subject": row.get("subject")}
    return item


# --------------------------------------------------------------------------------------------- MMMU

MMMU_OPEN = "Answer the question using a single word or phrase."
MMMU_MC = "Answer with the option's letter from the given choices directly."


def _mmmu_options(row: dict) -> list[str]:
    options = row.get("options") or "[]"
    return list(ast.literal_eval(options)) if isinstance(options, str) else list(options)


def _mmmu_subject(item_id: str) -> str:
    match = re.match(rf"^{re.escape(item_id.split('_')[0])}_(.+?)_\d+$", item_id)
    return match.group(1) if match else ""


def _mmmu(row: dict, ctx: BuildContext) -> Item:
    options, question, qtype = _mmmu_options(row), row["question"], row["question_type"]
    mc = qtype == "multiple-choice"
    lmms_text = (f"{question}\n{_options_block(options)}\n\n{MMMU_MC}" if mc else f"{question}\n\n{MMMU_OPEN}")
    # The images are those the prompt names (<image 1> ...), each once, in name order, as lmms-eval picks them.
    names = sorted({t.strip("<>").replace(" ", "_") for t in re.findall(r"<image \d+>", lmms_text)})
    images = [to_pil(row[n]) for n in names if row.get(n) is not None]
    item_id = row_id(row, ctx, "id")
    if _lmms(ctx):
        content, prefix = image_then_text(len(images), lmms_text), ""
    else:
        # VLMEvalKit's SmolVLM MMMU prompt: a "<image k>:" header before each image, then the question.
        content = [text_part("Question: ")]
        for k in range(1, len(images) + 1):
            content += [text_part(f"<image {k}>:"), {"type": "image"}, text_part("\n")]
        body = f"{question}\nChoices:\n{_options_block(options)}\nAnswer with the letter." if mc else question
        content.append(text_part(body.strip()))
        prefix = VLM_ANSWER_PREFIX if mc else ""
    answer = row["answer"]
    return Item(item_id, content, images, assistant_prefix=prefix,
                answers=[answer] if isinstance(answer, str) else list(answer),
                meta={"question_type": qtype, "options": options, "answer": answer,
                      "subject": _mmmu_subject(item_id), "seed": zlib.crc32(item_id.encode())})


def _mmmu_score(pred: str, item: Item) -> float:
    meta = item.meta
    return mo.mmmu_score(pred, meta["question_type"], meta["options"], meta["answer"], meta["seed"])


# --------------------------------------------------------------------------------------------- MathVista

MATHVISTA_HINTS = {
    "multi_choice": "Answer with the option's letter from the given choices directly.",
    "integer": "Answer the question using a single integer number.",
    "float1": "Answer the question using a single floating-point number with one decimal place.",
    "float2": "Answer the question using a single floating-point number with two decimal places.",
    "list": "Answer the question using a Python list.",
}
_VLM_MATHVISTA_REWRITES = {**{f"({c}) ": f"{c}. " for c in "ABCDEFGH"}, "\nOptions:": "\nChoices:", "Hint: ": ""}


def _mathvista_hint(row: dict) -> str:
    if row["question_type"] == "multi_choice":
        return MATHVISTA_HINTS["multi_choice"]
    atype, precision = row["answer_type"], row.get("precision")
    if atype == "float":
        return MATHVISTA_HINTS.get(f"float{int(precision or 0)}", "")
    return MATHVISTA_HINTS.get(atype, "")


def _mathvista(row: dict, ctx: BuildContext) -> Item:
    choices = list(row["choices"]) if row.get("choices") is not None else None
    image = to_pil(row.get("decoded_image") if row.get("decoded_image") is not None else row.get("image"))
    prefix = ""
    if _lmms(ctx):
        # lmms-eval's "format-prompt": question (unit), choices "A. x", then the answer-format hint.
        question = row["question"] + (f" (Unit: {row['unit']})" if row.get("unit") else "")
        parts = [question, _options_block(choices) if choices else "", _mathvista_hint(row)]
        text = "\n".join(p for p in parts if p)
    else:
        text = row.get("query") or row["question"]
        for old, new in _VLM_MATHVISTA_REWRITES.items():
            text = text.replace(old, new)
        text = text.strip()
        prefix = VLM_ANSWER_PREFIX if "A." in text and "B." in text else ""
    return Item(row_id(row, ctx, "pid"), image_then_text(1, text), [image], assistant_prefix=prefix,
                answers=[str(row["answer"])],
                meta={"question_type": row["question_type"], "answer_type": row["answer_type"], "choices": choices,
                      "answer": row["answer"], "precision": row.get("precision")})


def _mathvista_score(pred: str, item: Item) -> float:
    meta = item.meta
    return mo.mathvista_score(pred, meta["question_type"], meta["answer_type"], meta["choices"], meta["answer"],
                             meta["precision"])


# --------------------------------------------------------------------------------------------- MMStar


def _mmstar(row: dict, ctx: BuildContext) -> Item:
    question = row["question"].strip()
    if _lmms(ctx):
        # The reference's post prompt has no final period.
        text = question.replace(" Please answer yes or no.", "") + "\nAnswer with the option's letter from the " \
                                                                   "given choices directly"
        prefix = ""
    else:
        text, prefix = f"Question: {question}\nAnswer with the letter.", VLM_ANSWER_PREFIX
    return Item(row_id(row, ctx, "index"), image_then_text(1, text), [to_pil(row["image"])], assistant_prefix=prefix,
                answers=[row["answer"]],
                meta={"answer": row["answer"], "category": row.get("category"), "l2_category": row.get("l2_category")})


def _mmstar_aggregate(items, scores, predictions=None) -> TaskResult:
    """Macro mean over the L2 categories (as the reference's 'average'); each category is the mean of its L2s."""
    l2 = group_means(items, scores, "l2_category")
    parents: dict[str, list[float]] = defaultdict(list)
    seen = {}
    for item in items:
        seen[str(item.meta.get("l2_category"))] = str(item.meta.get("category"))
    for name, value in l2.items():
        parents[seen[name]].append(value)
    breakdown = {cat: mean(v) for cat, v in sorted(parents.items())}
    return TaskResult(mean(list(l2.values())), breakdown, {"l2_category": l2})


# --------------------------------------------------------------------------------------------- registry


def _meta_scorer(fn, *keys):
    return lambda pred, item: fn(pred, *(item.meta[k] for k in keys))


TASKS = [
    Task("docvqa", "DocVQA", "image", "lmms-lab/DocVQA", "validation", _docvqa, _meta_scorer(m.anls, "answers"),
         micro(), "ANLS (threshold 0.5)", "mean", 128, config="DocVQA", published=(58.3, 70.5)),
    Task("textvqa", "TextVQA", "image", "lmms-lab/textvqa", "validation", _textvqa,
         _meta_scorer(m.vqa_accuracy, "answers"), micro(), "VQA accuracy (EvalAI normaliser, 10 leave-one-out)",
         "mean", 32, published=(50.2, 60.2)),
    Task("chartqa", "ChartQA", "image", "lmms-lab/ChartQA", "test", _chartqa,
         _meta_scorer(m.relaxed_accuracy, "answer"), micro("type"), "relaxed accuracy (5%)", "mean", 16,
         published=(55.6, 62.8)),
    Task("ocrbench", "OCRBench", "image", "echo840/OCRBench", "test", _ocrbench,
         _meta_scorer(m.ocrbench_match, "answers", "dataset"), _ocrbench_aggregate,
         "substring match (HME100k: spaces removed, case kept)", "points / questions (1000 in the full set)", 128,
         published=(52.6, 61.0)),
    Task("ai2d", "AI2D", "image", "lmms-lab/ai2d", "test", _ai2d, _meta_scorer(m.letter_exact_match, "letter"),
         micro(), "letter exact match (case and punctuation ignored)", "mean", 16, published=(46.4, 59.2)),
    Task("scienceqa", "ScienceQA-IMG", "image", "lmms-lab/ScienceQA", "test", _scienceqa,
         _meta_scorer(m.scienceqa_match, "letter"), micro(), "letter match", "mean", 16, config="ScienceQA-IMG",
         published=(73.8, 80.0)),
    Task("mmmu", "MMMU", "image", "lmms-lab/MMMU", "validation", _mmmu, _mmmu_score, micro("subject"),
         "official MMMU multiple-choice / open-answer parsing", "mean over questions", 16, published=(29.0, 33.7)),
    Task("mathvista", "MathVista", "image", "AI4Math/MathVista", "testmini", _mathvista, _mathvista_score,
         micro("question_type"), "answer extraction + normalisation, exact match", "mean", 1024,
         published=(35.9, 40.1), rule_based_only=True,
         note="rule-based answer extraction; peers ask an LLM to extract the answer"),
    Task("mmstar", "MMStar", "image", "Lin-Chen/MMStar", "val", _mmstar, _meta_scorer(m.mmstar_match, "answer"),
         _mmstar_aggregate, "MMStar letter rule", "macro mean over categories", 16, published=(34.6, 38.3)),
]

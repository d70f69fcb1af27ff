# Open-answer parsing of MMMU and MathVista, as the reference harness (lmms-eval) computes them: pure functions of
# strings, with each quirk of the reference kept on purpose (noted where it matters).
from __future__ import annotations

import random
import re
import string
from collections.abc import Sequence

from .metrics import last_mentioned, levenshtein, option_letters

# ---------------------------------------------------------------------------------------------------------------
# MMMU: the official multiple-choice and open-answer parsing
# ---------------------------------------------------------------------------------------------------------------


def mmmu_parse_choice(response: str, options: Sequence[str], seed: int = 0) -> str:
    """The letter an answer picks (MMMU's parser): "(B)", then "B ", then "B.", then, for answers over 5 words,
    option texts; several candidates -> the one mentioned last; none -> a letter drawn with `seed` (the official
    code draws it unseeded)."""
    letters = option_letters(len(options))
    index2ans = dict(zip(letters, options))
    for char in [",", ".", "!", "?", ";", ":", "'"]:
        response = response.strip(char)
    response = " " + response + " "
    index_ans, with_brackets = True, False
    candidates = [c for c in letters if f"({c})" in response]
    if candidates:
        with_brackets = True
    if not candidates:
        candidates = [c for c in letters if f"{c} " in response]
    if not candidates:
        candidates = [c for c in letters if f"{c}." in response]
    if not candidates and len(response.split()) > 5:
        candidates = [c for c, ans in index2ans.items() if ans.lower() in response.lower()]
        if candidates:
            index_ans = False
    if not candidates:
        return random.Random(seed).choice(letters) if letters else ""
    return last_mentioned(response, candidates, index2ans, index_ans, with_brackets)


_NUM_COMMAS = re.compile(r"-?\b\d{1,3}(?:,\d{3})+\b")
_NUM_SCIENTIFIC = re.compile(r"-?\d+(?:\.\d+)?[eE][+-]?\d+")
_NUM_SIMPLE = re.compile(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])")


def mmmu_extract_numbers(text: str) -> list[str]:
    """Numbers with thousands commas, then scientific notation, then plain numbers (MMMU's order)."""
    return _NUM_COMMAS.findall(text) + _NUM_SCIENTIFIC.findall(text) + _NUM_SIMPLE.findall(text)


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
        return True
    except ValueError:
        return False


def mmmu_normalize(text: str) -> list:
    """A number becomes [float rounded to 2 places]; a string is lowercased, and a single character is padded
    with a space on either side so it cannot match inside a word."""
    text = text.strip()
    if _is_number(text):
        return [round(float(text.replace(",", "")), 2)]
    text = text.lower()
    if len(text) == 1:
        return [" " + text, text + " "]
    return [text]


_KEY_INDICATORS = ["could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result "]
_TRIVIAL = {":", ",", ".", "!", "?", ";", "'"}


def mmmu_parse_open(response: str) -> list:
    """Candidate answers in an open response (MMMU's parser): the shortest tail after a key phrase ("is ",
    "therefore ", ... and "=" in the last line) of each line, plus every number in them, normalised."""
    text = response.strip().strip(".").lower()
    # The official split also breaks at ". " before a capital, which cannot occur after lower(): lines only.
    lines = re.split(r"\.\s(?=[A-Z])|\n", text)
    keys = []
    for index, line in enumerate(lines):
        indicators = _KEY_INDICATORS + (["="] if index == len(lines) - 1 else [])
        shortest = None
        for indicator in indicators:
            if indicator in line:
                tail = line.split(indicator)[-1].strip()
                if not shortest or len(tail) < len(shortest):
                    shortest = tail
        if shortest and shortest.strip() not in _TRIVIAL:
            keys.append(shortest)
    if not keys:
        keys = [text]
    found = list(keys)
    for key in keys:
        found.extend(mmmu_extract_numbers(key))
    normalized = []
    for item in found:
        for value in mmmu_normalize(item):
            if value not in normalized:
                normalized.append(value)
    return normalized


def mmmu_eval_open(answer: str | Sequence[str], parsed: Sequence) -> float:
    """1.0 when a parsed number equals a normalised answer number, or a normalised answer string is inside a
    parsed string."""
    if isinstance(answer, str):
        golds = mmmu_normalize(answer)
    else:
        golds = [g for a in answer for g in mmmu_normalize(a)]
    for pred in parsed:
        if isinstance(pred, str):
            if any(isinstance(g, str) and g in pred for g in golds):
                return 1.0
        elif pred in golds:
            return 1.0
    return 0.0


def mmmu_score(prediction: str, question_type: str, options: Sequence[str], answer: str | Sequence[str],
               seed: int = 0) -> float:
    """One MMMU question: multiple-choice answers are parsed to a letter and must equal the answer letter(s);
    open answers are parsed and matched by `mmmu_eval_open`."""
    if question_type == "multiple-choice":
        letter = mmmu_parse_choice(prediction, options, seed)
        golds = [answer] if isinstance(answer, str) else list(answer)
        return 1.0 if letter in golds else 0.0
    return mmmu_eval_open(answer, mmmu_parse_open(prediction))


# ---------------------------------------------------------------------------------------------------------------
# MathVista (rule-based: the reference asks an LLM to extract the answer when these rules do not settle it)
# ---------------------------------------------------------------------------------------------------------------

_LAST_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def mathvista_extract(response: str, question_type: str, answer_type: str, choices: Sequence[str] | None) -> str:
    """The answer in a response. The reference's own rules first (an exact choice, a bare int / float, `The answer
    is "x".`); where it would call the LLM extractor, ours: an option letter for multiple choice (else the text,
    matched to the closest choice later), the last number for numeric answers, the first [...] for lists."""
    if not response:
        return ""
    choices = list(choices or [])
    if question_type == "multi_choice" and response in choices:
        return response
    if answer_type == "integer":
        try:
            return str(int(response))
        except ValueError:
            pass
    if answer_type == "float":
        try:
            return str(float(response))
        except ValueError:
            pass
    quoted = re.search(r'The answer is "(.*)"\.', response)
    if quoted:
        return quoted.group(1)
    if question_type == "multi_choice":
        letter = re.match(r"^\(?([A-Z])(?:[.:)]|$)", response.strip())
        if letter and letter.group(1) in option_letters(len(choices)):
            return letter.group(1)
        return response
    if answer_type in ("integer", "float"):
        numbers = _LAST_NUMBER.findall(response.replace(",", ""))
        return numbers[-1] if numbers else ""
    if answer_type == "list":
        bracket = re.search(r"\[[^\]]*\]", response)
        return bracket.group(0) if bracket else response
    return response


def mathvista_normalize(extraction: str, choices: Sequence[str] | None, question_type: str, answer_type: str,
                        precision: int | float | None) -> str | None:
    """The reference's normalisation: a letter (or "(B)") becomes its choice text, any other text the most similar
    choice; integers and floats are re-printed (floats rounded to `precision` places); None when unparsable."""
    if question_type == "multi_choice":
        choices = list(choices or [])
        extraction = extraction.strip() if isinstance(extraction, str) else str(extraction)
        bracketed = re.findall(r"\(([a-zA-Z])\)", extraction)
        if bracketed:
            extraction = bracketed[0].upper()
        letters = option_letters(len(choices))
        if extraction in letters:
            return choices[letters.index(extraction)]
        if not choices:
            return extraction
        distances = [levenshtein(extraction, c) for c in choices]
        return choices[distances.index(min(distances))]
    if answer_type == "integer":
        try:
            return str(int(float(extraction)))
        except (TypeError, ValueError, OverflowError):
            return None
    if answer_type == "float":
        try:
            # The dataset stores precision as a float; the reference's round(x, 2.0) would raise, so cast.
            return str(round(float(extraction), int(precision or 0)))
        except (TypeError, ValueError, OverflowError):
            return None
    return str(extraction)


def mathvista_score(prediction: str, question_type: str, answer_type: str, choices: Sequence[str] | None,
                    answer: str, precision: int | float | None = None) -> float:
    extraction = mathvista_extract(prediction.strip(), question_type, answer_type, choices)
    normalized = mathvista_normalize(extraction, choices, question_type, answer_type, precision)
    return 1.0 if str(normalized).strip() == str(answer).strip() else 0.0

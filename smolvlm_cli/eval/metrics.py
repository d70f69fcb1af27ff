# Scoring functions of the benchmarks, as the reference harness (lmms-eval) computes them: pure functions of strings.
# Each quirk of the reference is kept on purpose (noted where it matters) so that our numbers compare with theirs.
from __future__ import annotations

import re
import string
from collections.abc import Sequence

# ---------------------------------------------------------------------------------------------------------------
# Edit distance and ANLS (DocVQA)
# ---------------------------------------------------------------------------------------------------------------


def levenshtein(a: str, b: str) -> int:
    """Number of single-character insertions, deletions and substitutions turning `a` into `b`."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _squash(text: str) -> str:
    return " ".join(text.strip().lower().split())


def anls(prediction: str, answers: Sequence[str], threshold: float = 0.5) -> float:
    """Average Normalized Levenshtein Similarity of one prediction: the best over the answers, 0 below `threshold`.

    Distance is taken between the lowercased, whitespace-collapsed strings, but divided by the longer of the RAW
    strings, as lmms-eval does (so surrounding spaces make a near-miss slightly better)."""
    if isinstance(answers, str):
        answers = [answers]
    if not answers:
        return 0.0
    values = []
    for answer in answers:
        length = max(len(answer.upper()), len(prediction.upper()))
        dist = levenshtein(_squash(answer), _squash(prediction))
        values.append(0.0 if length == 0 else dist / length)
    score = 1.0 - min(values)
    return 0.0 if score < threshold else score


# ---------------------------------------------------------------------------------------------------------------
# VQA accuracy with the EvalAI answer normaliser (TextVQA)
# ---------------------------------------------------------------------------------------------------------------

_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've",
    "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's",
    "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at",
    "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas",
    "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't",
    "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}
_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                 "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
_VQA_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
# The reference's pattern reads "(?!<=\d)" (a typo for a look-behind): in effect any "." not followed by a digit.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(?<=\d)(\,)+(?=\d)")


def _vqa_punctuation(text: str, comma_strip: re.Pattern = _COMMA_STRIP) -> str:
    out = text
    for p in _VQA_PUNCT:
        # A mark touching a space is deleted, one inside a word becomes a space ("left-hand" -> "left hand").
        if p + " " in text or " " + p in text or comma_strip.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    # The reference passes re.UNICODE (32) as `count`: at most 32 periods are removed.
    return _PERIOD_STRIP.sub("", out, count=32)


def vqa_normalize(answer: str) -> str:
    """EvalAI's answer normaliser: lowercase, punctuation, number words to digits, articles, contractions."""
    text = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    text = _vqa_punctuation(text)
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES]
    return " ".join(words)


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """VQA accuracy: for each of the leave-one-out subsets of the human answers, min(1, matches / 3); averaged."""
    if not answers:
        return 0.0
    pred = vqa_normalize(prediction)
    refs = [vqa_normalize(a) for a in answers]
    accs = []
    for i in range(len(refs)):
        matches = sum(1 for j, ref in enumerate(refs) if j != i and ref == pred)
        accs.append(min(1.0, matches / 3))
    return sum(accs) / len(accs)


# ---------------------------------------------------------------------------------------------------------------
# Relaxed accuracy (ChartQA)
# ---------------------------------------------------------------------------------------------------------------


def _to_float(text: str) -> float | None:
    try:
        if text.endswith("%"):
            return float(text.rstrip("%")) / 100.0
        return float(text)
    except ValueError:
        return None


def relaxed_accuracy(prediction: str, answer: str, max_relative_change: float = 0.05) -> float:
    """1.0 when both parse as numbers within 5% of the answer (a trailing % divides by 100), or when the strings
    are equal ignoring case. A zero answer is compared as a string, as in the reference."""
    pred_f, target_f = _to_float(prediction), _to_float(answer)
    if pred_f is not None and target_f:
        return 1.0 if abs(pred_f - target_f) / abs(target_f) <= max_relative_change else 0.0
    return 1.0 if prediction.lower() == answer.lower() else 0.0


# ---------------------------------------------------------------------------------------------------------------
# OCRBench
# ---------------------------------------------------------------------------------------------------------------

HME_DATASET = "HME100k"


def ocrbench_match(prediction: str, answers: str | Sequence[str], dataset_name: str) -> float:
    """1.0 when a ground truth is a substring of the prediction: case-insensitive with newlines as spaces, or for
    the HME100k formulas with all spaces removed and case kept (as OCRBench and VLMEvalKit score them; lmms-eval
    lowercases the prediction first, which can only miss formulas with capitals)."""
    if isinstance(answers, str):
        answers = [answers]
    if dataset_name == HME_DATASET:
        pred = prediction.strip().replace("\n", " ").replace(" ", "")
        return 1.0 if any(a.strip().replace("\n", " ").replace(" ", "") in pred for a in answers) else 0.0
    pred = prediction.lower().strip().replace("\n", " ")
    return 1.0 if any(a.lower().strip().replace("\n", " ") in pred for a in answers) else 0.0


# ---------------------------------------------------------------------------------------------------------------
# Letter extraction for multiple-choice answers
# ---------------------------------------------------------------------------------------------------------------

# Two pairs are fused by missing commas in the reference list; kept fused so the same strings are removed.
_ANSWER_PREFIXES = ["The best answer is", "The correct answer is", "The answer is", "The answer",
                    "The best option isThe correct option is", "Best answer:Best option:"]


def extract_choice(prediction: str, letters: str | Sequence[str] = "ABCD") -> str | None:
    """The option letter a free-form answer names (Video-MME's rule): drop "The answer is"-style prefixes, give up
    on more than 10 words without any option letter, else the first option letter (upper case) in the text."""
    s = prediction.strip()
    for prefix in _ANSWER_PREFIXES:
        s = s.replace(prefix, "")
    # The reference also gives up on answers of over 10 words without a letter, which this already covers.
    match = re.search("[" + "".join(re.escape(c) for c in letters) + "]", s)
    return match.group(0) if match else None


def option_letters(n: int) -> list[str]:
    return [chr(ord("A") + i) for i in range(n)]


def letter_exact_match(prediction: str, letter: str) -> float:
    """AI2D's rule (lmms-eval exact_match with ignore_case and ignore_punctuation): the whole answer must be the
    letter once lowercased and stripped of punctuation ("B." counts, "B. a cat" does not)."""
    table = str.maketrans("", "", string.punctuation)
    return 1.0 if prediction.lower().translate(table) == letter.lower().translate(table) else 0.0


def scienceqa_match(prediction: str, letter: str) -> float:
    """ScienceQA's rule (from LLaVA): the answer is the letter, or starts with "<LETTER>."."""
    if prediction == letter:
        return 1.0
    if len(prediction) >= 2 and prediction[0].isupper() and prediction[1] == ".":
        return 1.0 if prediction[0] == letter else 0.0
    return 0.0


def mmstar_match(prediction: str, answer: str) -> float:
    """MMStar's rule: the first character is the letter, or it follows "(", "option " or "the answer is "."""
    gt = answer.lower().strip().replace("\n", " ")
    pred = prediction.lower().strip().replace("\n", " ")
    try:
        if gt == pred[0]:
            return 1.0
        if pred[0] == "(" and gt == pred[1]:
            return 1.0
        if pred[0:7] == "option " and gt == pred[7]:
            return 1.0
        if pred[0:14] == "the answer is " and gt == pred[14]:
            return 1.0
    except IndexError:
        return 0.0
    return 0.0


def mlvu_extract(prediction: str) -> str:
    """MLVU's rule (the prompt ends with "Best option: ("): the character before the first ")", else the answer."""
    s = prediction.strip()
    if ")" in s:
        i = s.index(")")
        return s[i - 1:i]
    return s


_MVBENCH_COMMA = re.compile(r"(\d)(\,)(\d)")
_MVBENCH_OPTION = re.compile(r"^([A-E])\.\s*(.+)$", re.IGNORECASE)
_MVBENCH_LETTER = re.compile(r"\b([A-E])\b", re.IGNORECASE)


def _mvbench_process(answer: str) -> str:
    match = _MVBENCH_OPTION.match(answer.strip())
    if match:
        return match.group(1).upper()
    text = answer.replace("\n", " ").replace("\t", " ").strip()
    text = _vqa_punctuation(text, _MVBENCH_COMMA)
    text = text.strip("'").strip('"').strip(")").strip("(").strip().lower()
    letter = _MVBENCH_LETTER.search(text)
    return letter.group(1).upper() if letter else text


def mvbench_match(prediction: str, letter: str) -> float:
    """MVBench's rule: both sides reduced to an option letter A-E (a standalone letter anywhere counts, so the
    article "a" reads as A - a quirk of the reference kept here), then compared."""
    return 1.0 if _mvbench_process(prediction) == _mvbench_process(letter) else 0.0


def last_mentioned(response: str, candidates: list[str], index2ans: dict, by_letter: bool,
                   with_brackets: bool) -> str:
    """Of several candidate letters, the one whose letter (or option text) appears last in the response."""
    if len(candidates) == 1:
        return candidates[0]
    if by_letter and with_brackets:
        starts = [response.rfind(f"({c})") for c in candidates]
    elif by_letter:
        starts = [response.rfind(f" {c} ") for c in candidates]
    else:
        starts = [response.lower().rfind(index2ans[c].lower()) for c in candidates]
    return candidates[starts.index(max(starts))]


def worldsense_choice(prediction: str, options: Sequence[str]) -> str:
    """WorldSense's parser (lmms-eval), quirks included: any option letter appearing anywhere in the answer is a
    candidate (the bracket check lost its brackets), ties go to the first candidate, nothing found gives "A".
    `options` are the dataset's "A. text" strings."""
    letters = option_letters(len(options))
    index2ans = {letter: opt[3:] for letter, opt in zip(letters, options)}
    response = prediction
    for char in [",", ".", "!", "?", ";", ":", "'"]:
        response = response.strip(char)
    response = " " + response + " "
    candidates = [c for c in letters if c in response]
    with_brackets, index_ans = bool(candidates), True
    if not candidates:
        candidates = [c for c in letters if f" {c} " in response]
    if not candidates and len(response.split()) > 5:
        candidates = [c for c, ans in index2ans.items() if ans.lower() in response.lower()]
        index_ans = not candidates
    if not candidates:
        return "A"
    return last_mentioned(response, candidates, index2ans, index_ans, with_brackets)


# ---------------------------------------------------------------------------------------------------------------
# TempCompass (rule-based; None means the rules cannot decide and the reference would ask an LLM judge)
# ---------------------------------------------------------------------------------------------------------------


def tempcompass_multi_choice(prediction: str, answer: str) -> float | None:
    if prediction == answer:
        return 1.0
    if prediction in ("A", "B", "C", "D"):
        return 1.0 if prediction == answer[:1] else 0.0
    if prediction[:2] in ("A.", "B.", "C.", "D."):
        return 1.0 if prediction.split(".")[0] == answer[:1] else 0.0
    if prediction[:2] in ("A)", "B)", "C)", "D)"):
        return 1.0 if prediction.split(")")[0] == answer[:1] else 0.0
    return None


def tempcompass_yes_no(prediction: str, answer: str) -> float | None:
    pred = prediction.lower()
    said = "yes" if pred.startswith("yes") else "no" if pred.startswith("no") else None
    if said is None:
        return None
    return 1.0 if said == answer else 0.0


def tempcompass_caption_matching(prediction: str, question: str, answer: str) -> float | None:
    """The question lists options as "Caption A: ..." lines; an answer naming a whole line, its sentence or its
    label ("Caption A", "A") is matched, anything else is left to the judge (None)."""
    try:
        lines = question.split("\n")[1:]
        sentences = [line.split(": ")[1] for line in lines]
        labels = [line.split(": ")[0] for line in lines]
        labels += [lab.replace("Sentence ", "").replace("Option ", "").replace("Caption ", "") for lab in labels]
        picked = None
        for line in lines:
            if line == prediction:
                picked = line
        for sentence in sentences:
            if sentence == prediction or (") " in prediction and sentence == prediction.split(") ")[1]):
                picked = sentence
        for label in labels:
            if label == prediction or label == prediction.replace(".", ""):
                picked = label
        if picked is None:
            return None
        ok = (picked == answer or picked == answer.split(":")[0] or picked == answer.split(": ")[1]
              or picked == answer.split(": ")[0].split()[1])
        return 1.0 if ok else 0.0
    except IndexError:
        return None


# ---------------------------------------------------------------------------------------------------------------
# Synthetic tasks
# ---------------------------------------------------------------------------------------------------------------


_DIGIT_WORDS = {w: d for w, d in _NUMBER_WORDS.items() if w != "none"}


def normalize_short_answer(text: str) -> str:
    """Lowercase, outer punctuation and spaces removed, inner spaces collapsed, number words zero..ten as digits."""
    words = text.lower().strip().strip(string.punctuation + " ").split()
    return " ".join(_DIGIT_WORDS.get(w, w) for w in words)


def short_answer_match(prediction: str, answers: str | Sequence[str]) -> float:
    if isinstance(answers, str):
        answers = [answers]
    pred = normalize_short_answer(prediction)
    return 1.0 if any(pred == normalize_short_answer(a) for a in answers) else 0.0

# Hand-checked cases for every scorer in smolvlm_cli.eval.metrics, including each normaliser's edge cases
# and the reference quirks we keep on purpose.
from __future__ import annotations

import pytest

from smolvlm_cli.eval import metrics as m
from smolvlm_cli.eval import metrics_open as mo

# --------------------------------------------------------------------------------------------- edit distance, ANLS


@pytest.mark.parametrize("a,b,d", [("", "", 0), ("abc", "", 3), ("kitten", "sitting", 3), ("flaw", "lawn", 2),
                                   ("same", "same", 0)])
def test_levenshtein(a, b, d):
    assert m.levenshtein(a, b) == d
    assert m.levenshtein(b, a) == d


def test_anls_exact_and_case_insensitive():
    assert m.anls("Hello", ["hello"]) == 1.0


def test_anls_partial_credit():
    assert m.anls("helo", ["hello"]) == pytest.approx(0.8)  # 1 edit / 5


def test_anls_collapses_whitespace():
    assert m.anls("  hello   world ", ["hello world"]) == 1.0


def test_anls_divides_by_raw_length():
    # distance 1 between "abcd" and "abce", but the raw prediction "abcd " has 5 characters: 1 - 1/5
    assert m.anls("abcd ", ["abce"]) == pytest.approx(0.8)


def test_anls_threshold():
    assert m.anls("ab", ["abcd"]) == pytest.approx(0.5)  # exactly at the threshold is kept
    assert m.anls("a", ["abc"]) == 0.0  # 1/3 < 0.5
    assert m.anls("abc", ["xyz"]) == 0.0


def test_anls_best_answer_and_empty():
    assert m.anls("cat", ["dog", "cat"]) == 1.0
    assert m.anls("cat", "cat") == 1.0
    assert m.anls("", [""]) == 1.0
    assert m.anls("x", []) == 0.0


# --------------------------------------------------------------------------------------------- EvalAI normaliser


@pytest.mark.parametrize("raw,norm", [
    ("Two", "2"),                      # number words to digits
    ("none", "0"),
    ("ten dogs", "10 dogs"),
    ("the cat", "cat"),                # articles dropped
    ("a an the", ""),
    ("dont", "don't"),                 # contractions restored
    ("isnt it", "isn't it"),
    ("John's", "john 's"),             # possessive split off
    ("left-hand", "left hand"),        # a mark inside a word becomes a space
    ("yes - no", "yes no"),            # a mark touching a space is deleted
    ("yes-no!", "yes no"),
    ("3.5", "3.5"),                    # a decimal point stays
    ("end.", "end"),                   # other periods go
    ("u.s.a.", "usa"),
    ("1,000", "1000"),                 # commas go
    ("why?", "why"),
    ("line\none\ttab", "line 1 tab"),
    ("(hello)", "hello"),
    ("  Mixed CASE  ", "mixed case"),
])
def test_vqa_normalize(raw, norm):
    assert m.vqa_normalize(raw) == norm


def test_vqa_period_strip_is_capped_at_32():
    # the reference passes re.UNICODE (= 32) as the count of re.sub
    assert m.vqa_normalize("." * 40 + "x") == "." * 8 + "x"


@pytest.mark.parametrize("n_match,acc", [(10, 1.0), (3, 0.9), (2, 0.6), (1, 0.3), (0, 0.0)])
def test_vqa_accuracy_leave_one_out(n_match, acc):
    answers = ["cat"] * n_match + ["dog"] * (10 - n_match)
    # e.g. 2 matches: the 2 subsets without a "cat" score 1/3, the 8 others 2/3 -> (2/3 + 16/3) / 10 = 0.6
    assert m.vqa_accuracy("cat", answers) == pytest.approx(acc)


def test_vqa_accuracy_normalises_both_sides():
    assert m.vqa_accuracy("Two.", ["2"] * 10) == 1.0
    assert m.vqa_accuracy("The Eiffel-Tower", ["eiffel tower"] * 10) == 1.0
    assert m.vqa_accuracy("x", []) == 0.0


# --------------------------------------------------------------------------------------------- ChartQA


@pytest.mark.parametrize("pred,target,score", [
    ("10", "10.4", 1.0),      # 0.4 / 10.4 = 3.8 %
    ("10", "10.6", 0.0),      # 0.6 / 10.6 = 5.7 %
    ("45%", "0.45", 1.0),     # a trailing % divides by 100
    ("45", "45%", 0.0),
    ("Yes", "yes", 1.0),      # strings: case-insensitive exact
    ("yes.", "yes", 0.0),
    ("0", "0", 1.0),          # a zero target is compared as a string
    ("0.0", "0", 0.0),
    ("abc", "12", 0.0),
])
def test_relaxed_accuracy(pred, target, score):
    assert m.relaxed_accuracy(pred, target) == score


# --------------------------------------------------------------------------------------------- OCRBench


def test_ocrbench_substring_lowercased():
    assert m.ocrbench_match("The answer is HELLO world", ["hello"], "IIIT5K") == 1.0
    assert m.ocrbench_match("hel lo", ["hello"], "IIIT5K") == 0.0
    assert m.ocrbench_match("X^{2}", ["x^{2}"], "CROHME") == 1.0
    assert m.ocrbench_match("nothing", ["a", "thin"], "docVQA") == 1.0  # any answer of a list
    assert m.ocrbench_match("line one\nline two", "one line", "IIIT5K") == 1.0  # newline read as a space


def test_ocrbench_hme_removes_spaces_and_keeps_case():
    assert m.ocrbench_match("x ^ { 2 }", ["x^{2}"], "HME100k") == 1.0
    assert m.ocrbench_match("X^{2}", ["x^{2}"], "HME100k") == 0.0


# --------------------------------------------------------------------------------------------- letters


@pytest.mark.parametrize("pred,letter", [
    ("B", "B"), ("The answer is C.", "C"), ("(D) dog", "D"), ("I think it's b", None), ("", None),
    ("Answer: B", "A"),  # the reference's rule takes the first capital option letter, here the A of "Answer"
    ("The best answer is D", "D"),
])
def test_extract_choice(pred, letter):
    assert m.extract_choice(pred) == letter


def test_extract_choice_letters():
    assert m.extract_choice("E", "ABCDE") == "E"
    assert m.extract_choice("E") is None


@pytest.mark.parametrize("pred,score", [("B.", 1.0), ("b", 1.0), ("(B)", 1.0), ("B. cat", 0.0), ("C", 0.0)])
def test_letter_exact_match(pred, score):
    assert m.letter_exact_match(pred, "B") == score


@pytest.mark.parametrize("pred,score", [("A", 1.0), ("A. dog", 1.0), ("B. dog", 0.0), ("(A)", 0.0), ("a", 0.0)])
def test_scienceqa_match(pred, score):
    assert m.scienceqa_match(pred, "A") == score


@pytest.mark.parametrize("pred,answer,score", [
    ("B", "B", 1.0), ("b) x", "B", 1.0), ("(C) x", "C", 1.0), ("Option D", "D", 1.0), ("The answer is A", "A", 1.0),
    ("", "A", 0.0), ("answer: b", "B", 0.0), ("Answer: A", "A", 1.0),  # first character "a"
])
def test_mmstar_match(pred, answer, score):
    assert m.mmstar_match(pred, answer) == score


@pytest.mark.parametrize("pred,out", [("B) cat", "B"), ("B", "B"), (")", ""), ("The answer is (C)", "C"),
                                      ("  D  ", "D")])
def test_mlvu_extract(pred, out):
    assert m.mlvu_extract(pred) == out


@pytest.mark.parametrize("pred,letter,score", [
    ("(B) cat", "B", 1.0), ("B. something", "B", 1.0), ("The answer is C", "C", 1.0), ("none", "A", 0.0),
    ("a cat", "A", 1.0),  # the article reads as the letter A in the reference
    ("(B) cat", "C", 0.0),
])
def test_mvbench_match(pred, letter, score):
    assert m.mvbench_match(pred, letter) == score


OPTS = ["A. red", "B. blue", "C. green", "D. pink"]


@pytest.mark.parametrize("pred,letter", [
    ("B", "B"), ("C. green", "C"), ("The answer is B", "B"),
    ("Both A and D", "A"),                              # several letters (the B of "Both" too): the first wins
    ("green", "A"),                                     # nothing found: "A"
    ("i would say the color is green here", "C"),       # over 5 words: option text
])
def test_worldsense_choice(pred, letter):
    assert m.worldsense_choice(pred, OPTS) == letter


# --------------------------------------------------------------------------------------------- MMMU

MMMU_OPTS = ["cat", "dog", "bird", "fish"]


@pytest.mark.parametrize("pred,letter", [
    ("(B)", "B"), ("B", "B"), ("The answer is C.", "C"), ("A. cat", "A"), ("(A) or (C)", "C"),
    ("I am sure that the correct one is the dog", "B"),
])
def test_mmmu_parse_choice(pred, letter):
    assert mo.mmmu_parse_choice(pred, MMMU_OPTS) == letter


def test_mmmu_parse_choice_fallback_is_seeded():
    picks = {mo.mmmu_parse_choice("hmm", MMMU_OPTS, seed=s) for s in range(20)}
    assert picks <= set("ABCD") and len(picks) > 1
    assert mo.mmmu_parse_choice("hmm", MMMU_OPTS, seed=3) == mo.mmmu_parse_choice("hmm", MMMU_OPTS, seed=3)


def test_mmmu_parse_open():
    assert mo.mmmu_parse_open("The answer is 42.") == [42.0]
    assert mo.mmmu_parse_open("1,234") == [1234.0, 234.0]
    assert mo.mmmu_parse_open("It is Paris") == ["paris"]
    assert mo.mmmu_parse_open("x = 3.14159") == [3.14]
    assert mo.mmmu_parse_open("b") == [" b", "b "]


def test_mmmu_extract_numbers():
    # the plain-number pattern also finds the tails "234" and "3" (as the official code does)
    assert mo.mmmu_extract_numbers("1,234 and 5e3 and -7.5 and 8") == ["1,234", "5e3", "234", "3", "-7.5", "8"]


def test_mmmu_eval_open():
    assert mo.mmmu_eval_open("42", [42.0]) == 1.0
    assert mo.mmmu_eval_open("1234", mo.mmmu_parse_open("1,234")) == 1.0
    assert mo.mmmu_eval_open("paris", mo.mmmu_parse_open("It is Paris")) == 1.0
    assert mo.mmmu_eval_open("b", ["about"]) == 0.0  # single letters are padded so they cannot match inside words
    assert mo.mmmu_eval_open("b", mo.mmmu_parse_open("b")) == 1.0
    assert mo.mmmu_eval_open(["7", "seven"], mo.mmmu_parse_open("seven")) == 1.0


def test_mmmu_score():
    assert mo.mmmu_score("(B)", "multiple-choice", MMMU_OPTS, "B") == 1.0
    assert mo.mmmu_score("(B)", "multiple-choice", MMMU_OPTS, "C") == 0.0
    assert mo.mmmu_score("so the result is 3.14", "open", [], "3.14") == 1.0


# --------------------------------------------------------------------------------------------- MathVista

CH = ["3/11", "8/11", "6/11", "3/5"]


@pytest.mark.parametrize("pred,score", [("B", 1.0), ("(B) 8/11", 1.0), ("8/11", 1.0), ("B.", 1.0),
                                        ("8/12", 1.0),   # the closest choice by edit distance
                                        ("A", 0.0), ("A triangle", 0.0)])
def test_mathvista_multi_choice(pred, score):
    assert mo.mathvista_score(pred, "multi_choice", "text", CH, "8/11") == score


@pytest.mark.parametrize("pred,answer,atype,precision,score", [
    ("5", "5", "integer", None, 1.0),
    ("The answer is 5 apples", "5", "integer", None, 1.0),
    ("five", "5", "integer", None, 0.0),
    ("0.60", "0.6", "float", 1.0, 1.0),
    ("1.449", "1.45", "float", 2.0, 1.0),
    ("It is about 1,234.5", "1234.5", "float", 1.0, 1.0),
    ("[2007, 2008]", "[2007, 2008]", "list", None, 1.0),
])
def test_mathvista_free_form(pred, answer, atype, precision, score):
    assert mo.mathvista_score(pred, "free_form", atype, None, answer, precision) == score


def test_mathvista_quoted_answer_rule():
    assert mo.mathvista_extract('The answer is "12".', "free_form", "integer", None) == "12"


# --------------------------------------------------------------------------------------------- TempCompass


@pytest.mark.parametrize("pred,score", [("B", 1.0), ("B. running", 1.0), ("C) x", 0.0), ("running", None)])
def test_tempcompass_multi_choice(pred, score):
    assert m.tempcompass_multi_choice(pred, "B. running") == score


@pytest.mark.parametrize("pred,score", [("Yes, it is", 1.0), ("no", 0.0), ("maybe", None)])
def test_tempcompass_yes_no(pred, score):
    assert m.tempcompass_yes_no(pred, "yes") == score


@pytest.mark.parametrize("pred,score", [("Caption A", 1.0), ("B", 0.0), ("a dog runs", 1.0), ("A.", 1.0),
                                        ("hmm", None)])
def test_tempcompass_caption_matching(pred, score):
    q = "Which caption matches the video?\nCaption A: a dog runs\nCaption B: a cat sleeps"
    assert m.tempcompass_caption_matching(pred, q, "Caption A: a dog runs") == score


# --------------------------------------------------------------------------------------------- synthetic


@pytest.mark.parametrize("pred,answer,score", [("Red.", "red", 1.0), ("three", "3", 1.0),
                                               (" blue  sky ", "Blue sky", 1.0), ("red circle", "red", 0.0),
                                               ("", "red", 0.0)])
def test_short_answer_match(pred, answer, score):
    assert m.short_answer_match(pred, answer) == score

# Rich tables for `smolvlm eval`: the task list (--list) and our scores beside the SmolVLM paper's numbers.
# Rendering only: the numbers come from the runner's results dict.
from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from .tasks import registry


def _pct(value) -> str:
    return "" if value is None else f"{100 * value:.1f}"


def _num(value) -> str:
    return "" if value is None else f"{value:.1f}"


def print_task_list(console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title="smolvlm eval tasks", title_justify="left")
    table.add_column("task", no_wrap=True)
    table.add_column("dataset (config) split")
    table.add_column("score")
    table.add_column("paper 256M / 500M")
    synthetic = []
    for name, task in registry().items():
        if task.family == "synthetic":
            synthetic.append(name.removeprefix("synthetic_"))
            continue
        config = f" ({task.config})" if task.config else f" ({len(task.configs)} subsets)" if task.configs else ""
        paper = f"{task.published[0]:.1f} / {task.published[1]:.1f}" if task.published else ""
        metric = task.metric + (" *" if task.rule_based_only else "")
        table.add_row(name, f"{task.dataset}{config} {task.split}", metric, paper)
    if synthetic:
        table.add_row("synthetic_<name>", f"--dataset-path synthetic=DIR; name: {', '.join(synthetic)}",
                      "normalised exact match", "")
    console.print(table)
    console.print("groups: all (the 14 benchmarks), image, video, synthetic.  * rule-based only: peers use an LLM "
                  "judge / extractor for part of this score.  Video tasks need --media-root TASK=FOLDER.")


def render_results_table(results: dict, console: Console | None = None) -> Table:
    """Our scores (in %) beside the published SmolVLM2-256M / 500M numbers; printed when a console is given."""
    title = f"eval: {results.get('model') or 'model'} (prompts: {results.get('prompt_style')})"
    if results.get("limit"):
        title += f", first {results['limit']} items per task"
    table = Table(title=title, title_justify="left")
    table.add_column("task")
    table.add_column("items", justify="right")
    table.add_column("ours %", justify="right")
    table.add_column("paper 256M", justify="right")
    table.add_column("paper 500M", justify="right")
    table.add_column("notes")
    rule_based = False
    for summary in results["tasks"].values():
        published = summary.get("published") or {}
        notes = []
        if summary.get("rule_based_only"):
            rule_based = True
            notes.append(f"rule-based only* ({summary.get('undecided_by_rules', 0)} undecided)")
        details = summary.get("details") or {}
        if "points" in details:
            notes.append(f"{details['points']}/{details['max_points']} points")
        table.add_row(summary["title"], str(summary["n"]), _pct(summary["score"]), _num(published.get("256M")),
                      _num(published.get("500M")), "; ".join(notes))
    comp = results.get("composite") or {}
    if comp.get("score") is not None:
        names = ", ".join(results["tasks"][k]["title"] for k in comp.get("weights", {}) if k in results["tasks"])
        table.add_row("[bold]composite[/]", "", f"[bold]{_pct(comp['score'])}[/]", "", "", f"weighted mean of {names}")
    if console is not None:
        console.print(table)
        if rule_based:
            console.print("* peers use an LLM judge / answer extractor here; ours applies only the rule-based part.")
        if results.get("prompt_style") == "lmms":
            console.print("The paper's numbers come from VLMEvalKit's prompts: --prompt-style vlmevalkit compares like "
                          "with like.")
    return table


# lmms-eval's metric name for each of our tasks (its task YAMLs' first `metric_list` entry, lmms-eval 0.7.3); the
# synthetic tasks score by exact match.
LMMS_METRICS = {"docvqa": "anls", "textvqa": "exact_match", "chartqa": "relaxed_overall",
                "ocrbench": "ocrbench_accuracy", "ai2d": "exact_match", "scienceqa": "exact_match",
                "mmmu": "mmmu_acc", "mathvista": "llm_as_judge_eval", "mmstar": "average",
                "videomme": "videomme_perception_score", "mlvu": "mlvu_percetion_score",
                "mvbench": "mvbench_accuracy", "tempcompass": "avg_accuracy", "worldsense": "worldsense_score"}


def lmms_results_path(results_path) -> Path:
    results_path = Path(results_path)
    return results_path.with_name(results_path.stem + ".lmms_eval_results.json")


def lmms_layout(results: dict, date: str | None = None) -> dict:
    """Our results in the layout of lmms-eval's aggregated results file (evaluator.simple_evaluate's dict as
    EvaluationTracker.save_results_aggregated writes it): per task `results` ("metric,filter" keys, alias,
    samples), `configs`, `versions`, `n-shot`, `higher_is_better`, `n-samples`, and the run's `config`."""
    import time

    from .. import __version__

    out = {key: {} for key in ("results", "group_subtasks", "configs", "versions", "n-shot", "higher_is_better",
                               "n-samples")}
    limit = results.get("limit")
    for name, s in results["tasks"].items():
        metric = LMMS_METRICS.get(name, "exact_match")
        out["results"][name] = {"alias": name, f"{metric},none": s["score"], f"{metric}_stderr,none": "N/A",
                                "samples": s["n"]}
        out["group_subtasks"][name] = []
        out["configs"][name] = {
            "task": name, "dataset_path": s.get("dataset") or "synthetic", "dataset_name": s.get("config"),
            "test_split": s.get("split"), "output_type": "generate_until",
            "generation_kwargs": {"max_new_tokens": s.get("max_new_tokens"), "do_sample": False},
            "metric_list": [{"metric": metric, "aggregation": "mean", "higher_is_better": True}],
            "metadata": {"smolvlm_metric": s.get("metric"), "smolvlm_aggregation": s.get("aggregation"),
                         "prompt_style": results.get("prompt_style")}}
        out["versions"][name] = 0
        out["n-shot"][name] = 0
        out["higher_is_better"][name] = {metric: True}
        # the full set's size is known only when the limit did not cut it
        original = s["n"] if limit is None or s["n"] < limit else None
        out["n-samples"][name] = {"original": original, "effective": s["n"]}
    out["config"] = {"model": results.get("model"), "model_args": f"pretrained={results.get('model')}",
                     "model_backend": f"smolvlm-cli {__version__}", "limit": limit,
                     "gen_kwargs": {"max_new_tokens": results.get("max_new_tokens_cap")},
                     "prompt_style": results.get("prompt_style")}
    out["date"] = date or time.strftime("%Y%m%d_%H%M%S")
    return out


def task_scores(data: dict) -> dict[str, tuple[str, float]]:
    """{task: (metric, value)} from our results file or one in lmms-eval's layout."""
    if "tasks" in data:
        return {t: (s.get("metric", "score"), float(s["score"])) for t, s in data["tasks"].items()}
    out = {}
    for task, entry in data.get("results", {}).items():
        for key, value in entry.items():
            metric, sep, _ = key.partition(",")
            if sep and "_stderr" not in metric and isinstance(value, (int, float)):
                out[task] = (metric, float(value))
                break
    return out


def read_results(path) -> dict:
    import json

    from ..errors import UserError

    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"results file not found: {path}", "pass a file written by smolvlm eval (or lmms-eval)") \
            from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not a JSON results file ({e})", "pass a file written by smolvlm eval") from None
    if not isinstance(data, dict) or not task_scores(data):
        raise UserError(f"{path} holds no task scores", "pass a results file of smolvlm eval or lmms-eval")
    return data


def compare_results(a: dict, b: dict) -> list[dict]:
    """Per task of either file: its score in A and B and B - A (None where a file lacks the task)."""
    sa, sb = task_scores(a), task_scores(b)
    rows = []
    for task in [*sa, *(t for t in sb if t not in sa)]:
        va, vb = sa.get(task, (None, None))[1], sb.get(task, (None, None))[1]
        metric = (sa.get(task) or sb.get(task))[0]
        rows.append({"task": task, "metric": metric, "a": va, "b": vb,
                     "diff": None if va is None or vb is None else vb - va})
    return rows


def print_compare(path_a, path_b, console: Console | None = None) -> list[dict]:
    console = console or Console()
    rows = compare_results(read_results(path_a), read_results(path_b))
    table = Table(title=f"A = {path_a}\nB = {path_b}", title_justify="left")
    table.add_column("task", no_wrap=True)
    table.add_column("metric", overflow="fold")
    for col in ("A", "B", "B - A"):
        table.add_column(col, justify="right", no_wrap=True)
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    for r in rows:
        diff = "-" if r["diff"] is None else f"{r['diff']:+.4f}"
        table.add_row(r["task"], r["metric"], fmt(r["a"]), fmt(r["b"]), diff)
    console.print(table)
    return rows


def progress_bar(console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)

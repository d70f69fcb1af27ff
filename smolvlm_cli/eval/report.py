# Rich tables for `smolvlm eval`: the task list (--list) and our scores beside the SmolVLM paper's numbers.
# Rendering only: the numbers come from the runner's results dict.
from __future__ import annotations

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

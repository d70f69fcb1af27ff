# Rich summaries printed by the CLI after a command's work is done.
# Rendering only: the numbers come from the modules that computed them.
from __future__ import annotations

from rich.console import Console
from rich.table import Table


def human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def print_init_summary(result, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"SmolVLM assembled -> {result.out}", title_justify="left")
    table.add_column("part")
    table.add_column("parameters", justify="right")
    table.add_column("from")
    where = {"vision tower": "vision", "connector": "connector", "LM layers": "text", "embeddings": "text",
             "lm_head": "text"}
    for name, count in result.parameters.items():
        table.add_row(name, f"{count:,}", result.sources.get(where[name], ""))
    table.add_row("[bold]total[/]", f"[bold]{result.total_parameters:,}[/]", human(result.total_parameters))
    console.print(table)
    console.print(
        f"tokens per image tile: [bold]{result.image_seq_len}[/]   context length: [bold]{result.context_length}[/]"
        f"   vocab: [bold]{result.vocab_size}[/] (<image> = {result.special_token_ids['<image>']}, "
        f"<end_of_utterance> = {result.special_token_ids['<end_of_utterance>']})"
    )

# Every command's --help prints without importing what only running it needs (benchmarks/cli_startup.py times it),
# and the DeepSpeed launcher's `--local_rank` is taken before Typer parses.
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from smolvlm_cli.cli import main, without_launcher_rank

HEAVY = ("torch", "transformers", "deepspeed", "datasets", "peft", "numpy", "PIL", "av", "pydantic", "yaml",
         "huggingface_hub", "safetensors", "tokenizers")

# One process for every command in turn: the modules each one added are recorded before the next runs.
SCRIPT = f"""
import json, sys
import typer
from smolvlm_cli.cli import app, main

def walk(group, prefix):
    for name, cmd in sorted(getattr(group, "commands", {{}}).items()):
        yield [*prefix, name]
        yield from walk(cmd, [*prefix, name])

found = {{}}
for path in [[], *walk(typer.main.get_command(app), [])]:
    try:
        main([*path, "--help"])
    except SystemExit as e:
        assert e.code in (0, None), (path, e.code)
    found[" ".join(path)] = sorted(m for m in {HEAVY!r} if m in sys.modules)
print("RESULT:" + json.dumps(found))
"""


def test_every_commands_help_imports_no_framework_and_no_pydantic():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True).stdout
    found = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT:"))[len("RESULT:"):])
    assert set(found) == {"", "data", "data cache", "data check", "data inspect", "data synth", "download", "eval", "export",
                          "generate", "init", "plan", "report", "train-video", "train-vision"}
    assert found == {command: [] for command in found}


def test_the_launchers_local_rank_is_dropped_in_both_spellings():
    args = ["train-vision", "--recipe", "r.yaml"]
    assert without_launcher_rank(["--local_rank=1", *args]) == args
    assert without_launcher_rank(["--local_rank", "3", *args]) == args
    assert without_launcher_rank(args) == args


def test_a_launched_rank_reports_a_mistake_in_one_line(tmp_path, capsys):
    # `--local_rank=N` is where the DeepSpeed launcher puts it: before the command name
    with pytest.raises(SystemExit) as exit_:
        main(["--local_rank=1", "train-vision", "--recipe", "r.yaml", "--init", "m", "--out", str(tmp_path / "o"),
              "--nnodes", "2", "--node-rank", "0"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == ("error: --nnodes 2 needs --node-rank and --master-addr - run the same "
                                               "command on every node with its own --node-rank (0 on the node at "
                                               "--master-addr)")

# `smolvlm train-vision` / `train-video`: one command per stage, with the launch options (several processes,
# nodes, hostfile) and the data options.
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from .cli_common import InitOpt, RecipeOpt, SetOpt, user_errors

if TYPE_CHECKING:
    from .train.launch import Launch


def _train(stage: str, recipe: Path, init: Path, out: Path, set_: Optional[list[str]], max_steps: Optional[int],
           launch: Launch, deepspeed: Optional[str], dry_run: bool, data: Optional[list[Path]] = None,
           eval_data: Optional[list[Path]] = None) -> None:
    if dry_run:
        from .data.inspect import inspect_stage
        from .train.run import with_data

        if eval_data:  # a bad held-out row is reported as a real run would, before the data report
            from .eval.user_data import check_user_data
            from .recipe_eval import eval_data_overrides

            eval_data_overrides(eval_data)  # a missing path: the --eval-data message
            check_user_data(eval_data)
        inspect_stage(recipe, stage, init, with_data(recipe, stage, set_ or [], data), max_steps)
        return
    from .train.run import train_stage

    code = train_stage(recipe, stage, init, out, set_ or [], max_steps, launch, deepspeed, data or None,
                       eval_data or None)
    if code:
        raise typer.Exit(code)


OutOpt = typer.Option(..., "--out", "-o", help="Run folder (checkpoints, phase models, metrics.jsonl).")
MaxStepsOpt = typer.Option(None, "--max-steps", help="Cap every phase at this many optimizer steps.")
NprocOpt = typer.Option(1, "--nproc", help="Processes on this machine, or on each node with --nnodes (relaunches "
                                           "itself under torchrun).")
NnodesOpt = typer.Option(1, "--nnodes", help="Multi-node torchrun: run the same command on every node, each with "
                                             "its --node-rank and node 0's --master-addr.")
NodeRankOpt = typer.Option(None, "--node-rank", help="This node's number, 0..nodes-1 (--nnodes, or --hostfile with "
                                                     "--no-ssh).")
MasterAddrOpt = typer.Option(None, "--master-addr", help="Address of node 0, which every node can reach.")
MasterPortOpt = typer.Option(None, "--master-port", help="Free port on node 0, the same on every node "
                                                         "(default 29500).")
HostfileOpt = typer.Option(None, "--hostfile", help="DeepSpeed hostfile ('HOST slots=N' lines): the DeepSpeed "
                                                    "launcher starts every node over ssh (pdsh).")
NoSshOpt = typer.Option(False, "--no-ssh", help="With --hostfile: start only this node's processes; run on every "
                                                "node with --node-rank and --master-addr.")
DeepspeedOpt = typer.Option(None, "--deepspeed", help="zero0 (ZeRO off) | zero2 | zero3 | zero3_offload | path to "
                                                      "your JSON config.")
DryRunOpt = typer.Option(False, "--dry-run", help="Report the data mixture, lengths and efficiency; no training.")
DataOpt = typer.Option(None, "--data", help="Train on this JSONL or CSV file, or image folder with metadata.jsonl / "
                                             ".csv, instead of the recipe's data (every phase of the stage); repeat "
                                             "to mix several by row count.")
EvalDataOpt = typer.Option(None, "--eval-data", help="Held-out rows (same formats as --data) answered and scored "
                                                     "(eval.data_metric: exact_match | anls) every eval.every_steps, "
                                                     "default every checkpoint; repeatable.")


def _train_command(app: typer.Typer, stage: str, doc: str):
    @user_errors
    def command(recipe: Path = RecipeOpt, init: Path = InitOpt, out: Path = OutOpt,
                set_: Optional[list[str]] = SetOpt, max_steps: Optional[int] = MaxStepsOpt, nproc: int = NprocOpt,
                nnodes: int = NnodesOpt, node_rank: Optional[int] = NodeRankOpt,
                master_addr: Optional[str] = MasterAddrOpt, master_port: Optional[int] = MasterPortOpt,
                hostfile: Optional[Path] = HostfileOpt, no_ssh: bool = NoSshOpt,
                deepspeed: Optional[str] = DeepspeedOpt, dry_run: bool = DryRunOpt,
                data: Optional[list[Path]] = DataOpt, eval_data: Optional[list[Path]] = EvalDataOpt) -> None:
        from .train.launch import Launch

        launch = Launch(nproc, nnodes, node_rank, master_addr, master_port, hostfile, no_ssh)
        _train(stage, recipe, init, out, set_, max_steps, launch, deepspeed, dry_run, data, eval_data)

    command.__doc__ = doc
    app.command(f"train-{stage}")(command)


def add_train_commands(app: typer.Typer) -> None:
    _train_command(app, "vision", "Run the recipe's vision stage (its phases in order) with DeepSpeed; resumes from OUT's "
                         "checkpoints.")
    _train_command(app, "video", "Run the recipe's video stage from a vision-stage run (or a model folder); resumes from "
                        "OUT's checkpoints.")

# What every `smolvlm` command shares: the group class, error handling (one line, exit 2) and common options.
# No torch / transformers / deepspeed import here: `--help` must stay fast.
from __future__ import annotations

import functools

import typer
from typer.core import TyperGroup

from .errors import UserError


class SmolGroup(TyperGroup):
    """Typer's group with a help flag that is False, not None, when absent: Typer 0.29 skips the pydantic coercion of
    a flag only when its value is a bool, so a None help flag of each group on the way to a command imported pydantic
    (45 ms) for every `smolvlm COMMAND --help`."""

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None and option.default is None:
            option.default = False
        return option


DEBUG = {"debug": False}  # set by the app's --debug: user_errors then re-raises


def user_errors(fn):
    """Print a UserError as one red line (hint included) and exit 2; --debug re-raises it. In the ranks of a
    launch, errors.hand_off decides who prints, so that a launch reports one error once."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            if DEBUG["debug"]:
                raise
            from .errors import hand_off

            show, code = hand_off(e)
            if show:
                from rich.console import Console
                from rich.markup import escape

                colour = "yellow" if e.label == "stopped" else "red"  # the message is text: [qlora] is no markup
                Console(stderr=True, soft_wrap=True).print(f"[bold {colour}]{e.label}:[/] {escape(e.one_line())}",
                                                           markup=True, highlight=False)
            raise typer.Exit(code) from None

    return wrapper


RecipeOpt = typer.Option(..., "--recipe", "-r", help="Recipe YAML, e.g. recipes/tiny.yaml.", show_default=False)
SetOpt = typer.Option(None, "--set", help="Override a recipe field: key.path=value (repeatable).")
InitOpt = typer.Option(..., "--init", help="Model folder from `smolvlm init`, a finished run folder, or the hub id "
                                           "of a checkpoint fetched by `smolvlm download --model ID`.")

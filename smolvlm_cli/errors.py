# User-facing errors: each names the problem and the fix, and maps to exit code 2.
# The CLI prints them as one line; anything else is a bug and keeps its traceback.
from __future__ import annotations

import json
import os
import signal

# Set by `relaunch` for the ranks it starts: where a rank leaves its error for the launching parent to print once
ERROR_FILE_ENV = "SMOLVLM_ERROR_FILE"


class UserError(Exception):
    """An error the user can fix. `hint` says how."""

    exit_code = 2
    label = "error"
    # True when every rank of a launch raises this same error at the same point (checkpoint.agree): then one
    # process reports it and the others stay quiet
    agreed = False

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __reduce__(self):
        # ranks exchange their errors pickled (checkpoint.agree); Exception's own reduce would drop the hint
        return self.__class__, (self.message, self.hint), self.__dict__

    def one_line(self) -> str:
        text = self.message.rstrip(".")
        if self.hint:
            text += f" - {self.hint}"
        return " ".join(text.split())


class RecipeError(UserError):
    """The recipe file or an override is invalid."""


class PartError(UserError):
    """A model part (vision tower, language model, tokenizer) is missing or unusable."""


class OutputError(UserError):
    """The output location cannot be written as asked."""


class MediaError(UserError):
    """An image or video cannot be read."""


class Stopped(UserError):
    """Training stopped on a scheduler's request (SIGTERM, SIGUSR1) after saving its state: the same command resumes.
    The exit code is the shell's for that signal, as if the signal had ended the run, so schedulers see it as such."""

    label = "stopped"

    def __init__(self, message: str, hint: str | None = None, signum: int = signal.SIGTERM):
        super().__init__(message, hint)
        self.exit_code = 128 + int(signum)


def hand_off(error: UserError, env: dict | None = None) -> tuple[bool, int]:
    """How a process reports `error`: (print it here?, exit code). Outside a launch it prints. Under `relaunch` the
    parent prints: ranks that stopped together exit 0 (a launcher would add a failure report of its own to any
    other code) after local rank 0 wrote the error down; a rank that failed alone writes it unless another rank
    already did and exits with its code, so that the launcher stops the others. Under another launcher (srun,
    torchrun by hand) rank 0 alone prints an agreed error."""
    env = os.environ if env is None else env
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return True, error.exit_code
    path = env.get(ERROR_FILE_ENV)
    if path and error.agreed:
        if env.get("LOCAL_RANK", "0") != "0":
            return False, 0
        return (False, 0) if record_error(error, path) else (True, error.exit_code)
    if path:
        return not record_error(error, path, first_only=True), error.exit_code
    return not error.agreed or env["RANK"] == "0", error.exit_code


def record_error(error: UserError, path: str, first_only: bool = False) -> bool:
    """Write `error` to `path` for the launching parent, whole or not at all; False if it could not be written
    (with `first_only`, True if another rank's error is there already: the first one is the cause)."""
    data = {"message": error.message, "hint": error.hint, "label": error.label, "exit_code": error.exit_code}
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(data, f)
        if first_only:
            os.link(tmp, path)  # fails if the file exists: an atomic "create unless there"
        else:
            os.replace(tmp, path)
        return True
    except FileExistsError:
        return True
    except OSError:
        return False
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def recorded_error(path: str) -> UserError | None:
    """The error a rank left at `path` (see hand_off), as the parent raises it; None if there is none."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    error = UserError(data["message"], data.get("hint"))
    error.label, error.exit_code, error.agreed = data.get("label", "error"), int(data.get("exit_code", 2)), True
    return error

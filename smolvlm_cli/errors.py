# User-facing errors: each names the problem and the fix, and maps to exit code 2.
# The CLI prints them as one line; anything else is a bug and keeps its traceback.
from __future__ import annotations


class UserError(Exception):
    """An error the user can fix. `hint` says how."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

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

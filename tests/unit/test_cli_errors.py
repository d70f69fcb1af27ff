# A user error prints as one line, exactly as written: brackets in a hint (pip extras) are text, not Rich markup.
from __future__ import annotations

import pytest
import typer

from smolvlm_cli.cli_common import user_errors
from smolvlm_cli.errors import UserError


def test_an_error_line_keeps_its_brackets(capsys):
    @user_errors
    def command():
        raise UserError("bitsandbytes is not installed [needed by qlora]", "pip install 'smolvlm-cli[qlora]'")

    with pytest.raises(typer.Exit) as exit_:
        command()
    assert exit_.value.exit_code == 2
    assert capsys.readouterr().err.strip() == ("error: bitsandbytes is not installed [needed by qlora] - pip install "
                                               "'smolvlm-cli[qlora]'")

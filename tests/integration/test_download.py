# `smolvlm download` against a loopback fake hub (tests/hub_server.py): the real huggingface_hub and datasets clients
# run in a subprocess with HF_ENDPOINT pointed at it. Plus the pure planning, card and manifest helpers in-process.
from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from smolvlm_cli.download import (MODEL_FILE_PATTERNS, TOKENIZER_FILE_PATTERNS, card_split_info, plan_downloads,
                                  read_manifest, select_files)
from smolvlm_cli.download_report import rich_tqdm
from smolvlm_cli.errors import RecipeError, UserError
from smolvlm_cli.recipe import load_recipe
from tests.hub_server import FakeHub, git_blob_id

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "recipes" / "tiny.yaml"
MODEL_REPO = "org/siglip-tiny"
DATA_REPO = "org/tiny-cauldron"
N_ROWS = 10
WANTED = ["config.json", "model.safetensors"]  # the fake model repo's files that download must fetch

# ---------------------------------------------------------------------------------------------------------------
# The fake hub and how the CLI is run against it
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, bytes]:
    """A tiny SigLIP's config and weights (from save_pretrained), plus files a real repo has that download must
    leave out. Only WANTED is taken from the saved folder: whatever else transformers may write is not in the repo."""
    import torch
    from transformers import SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("siglip")
    SiglipVisionModel(SiglipVisionConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=32, image_size=16, patch_size=8)).save_pretrained(folder)
    files = {name: (folder / name).read_bytes() for name in WANTED}
    files.update({"README.md": b"# tiny siglip\n", ".gitattributes": b"*.safetensors filter=lfs\n",
                  "pytorch_model.bin": b"pickled weights are never fetched", "onnx/config.json": b"{}",
                  "onnx/model.onnx": b"onnx"})
    return files


def cauldron_parquet() -> bytes:
    import datasets
    from datasets import Features, List, Value
    from PIL import Image

    rows = {"images": [[Image.new("RGB", (8, 8), (20 * i, 0, 0))] for i in range(N_ROWS)],
            "texts": [[{"user": f"q{i}", "assistant": f"a{i}", "source": "tiny"}] for i in range(N_ROWS)]}
    features = Features({"images": List(datasets.Image()),
                         "texts": List({"user": Value("string"), "assistant": Value("string"),
                                        "source": Value("string")})})
    buf = io.BytesIO()
    datasets.Dataset.from_dict(rows, features=features).to_parquet(buf)
    return buf.getvalue()


DATA_README = b"""---
dataset_info:
  splits:
  - name: train
    num_bytes: 2000
    num_examples: 10
  download_size: 4321
---
# A tiny Cauldron-style dataset
"""


@pytest.fixture(scope="module")
def hub(model_files):
    with FakeHub() as server:
        server.add(MODEL_REPO, model_files)
        server.add(DATA_REPO, {"README.md": DATA_README, "data/train-00000-of-00001.parquet": cauldron_parquet()},
                   repo_type="dataset")
        yield server


def hub_env(tmp: Path, endpoint: str, offline: bool = False) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k.upper() not in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "HF_DATASETS_OFFLINE",
                                "TRANSFORMERS_OFFLINE", "HF_TOKEN")}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp / "hf-home"), HF_HUB_OFFLINE="1" if offline else "0",
               SMOLVLM_CACHE=str(tmp / "smolvlm-cache"), NO_PROXY="127.0.0.1,localhost", COLUMNS="250",
               HF_HUB_DISABLE_TELEMETRY="1", PYTHONWARNINGS="ignore")
    return env


def smolvlm(env: dict, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smolvlm_cli.cli", "download", "--recipe", str(TINY),
                           *map(str, args)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def flat(text: str) -> str:
    """Rich output with table borders and line wrapping removed."""
    return " ".join(text.replace("│", " ").split())


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


VISION = f"model.vision.source={MODEL_REPO}"


def fetched(gets: list[str], repo_path: str) -> list[str]:
    """The repo files behind resolve GETs, each checked to be in `repo_path` (the revision in the URL is the hub
    client's choice, so it is left out)."""
    prefix = f"/{repo_path}/resolve/"
    assert all(g.startswith(prefix) for g in gets), gets
    return [g[len(prefix):].split("/", 1)[1] for g in gets]


# ---------------------------------------------------------------------------------------------------------------
# Models into the Hugging Face cache; a second run fetches nothing
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cached(hub, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cached")
    env = hub_env(tmp, hub.url)
    first = ok(smolvlm(env, "--what", "models", "--set", VISION))
    after_first = list(hub.downloads())
    second = ok(smolvlm(env, "--what", "models", "--set", VISION))
    return {"tmp": tmp, "env": env, "first": first, "second": second, "first_gets": after_first,
            "second_gets": hub.downloads()[len(after_first):], "sha": hub.repos["model", MODEL_REPO].sha}


def test_models_land_in_the_hub_cache_with_only_the_needed_files(cached, model_files):
    repo_dir = cached["tmp"] / "hf-home" / "hub" / "models--org--siglip-tiny"
    assert (repo_dir / "refs" / "main").read_text() == cached["sha"]  # init looks parts up by branch
    snapshot = repo_dir / "snapshots" / cached["sha"]
    assert sorted(p.name for p in snapshot.iterdir()) == WANTED
    for name in WANTED:
        assert (snapshot / name).read_bytes() == model_files[name]
    assert sorted(fetched(cached["first_gets"], MODEL_REPO)) == WANTED  # each file once, nothing else
    assert "fetched 2 of 2 files" in cached["first"].stdout


def test_manifest_records_sha_files_and_sizes(cached, model_files):
    manifest = read_manifest(cached["tmp"] / "smolvlm-cache" / "downloads" / "tiny")
    assert manifest["recipe"] == "tiny" and manifest["datasets"] == {}
    assert list(manifest["models"]) == ["vision"]  # the random text part has nothing to fetch
    vision = manifest["models"]["vision"]
    snapshot = cached["tmp"] / "hf-home" / "hub" / "models--org--siglip-tiny" / "snapshots" / cached["sha"]
    assert vision == {
        "repo_id": MODEL_REPO, "requested_revision": None, "sha": cached["sha"], "path": str(snapshot),
        "files": [{"path": n, "size": len(model_files[n])} for n in WANTED],
        "size": sum(len(model_files[n]) for n in WANTED),
    }
    assert "skipped: random weights, built by init" in cached["first"].stdout


def test_second_run_fetches_nothing(cached):
    assert cached["second_gets"] == []
    assert "already present" in cached["second"].stdout


def test_a_missing_file_is_fetched_again_alone(cached, hub, model_files):
    snapshot = cached["tmp"] / "hf-home" / "hub" / "models--org--siglip-tiny" / "snapshots" / cached["sha"]
    (snapshot / "config.json").resolve().unlink()  # as if the run had stopped before this file
    (snapshot / "config.json").unlink()
    before = len(hub.downloads())
    result = ok(smolvlm(cached["env"], "--what", "models", "--set", VISION))
    assert fetched(hub.downloads()[before:], MODEL_REPO) == ["config.json"]
    assert (snapshot / "config.json").read_bytes() == model_files["config.json"]
    assert "fetched 1 of 2 files" in result.stdout


def test_init_finds_the_downloaded_part_offline(cached):
    code = ("from smolvlm_cli.parts import resolve_vision; from smolvlm_cli.recipe import load_recipe; "
            f"m = load_recipe({str(TINY)!r}, [{VISION!r}]).model; print(resolve_vision({MODEL_REPO!r}, m).path)")
    env = {**cached["env"], "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith(cached["sha"])


# ---------------------------------------------------------------------------------------------------------------
# --out: a self-contained folder, usable offline afterwards
# ---------------------------------------------------------------------------------------------------------------


def test_out_folder_holds_the_model_and_an_offline_rerun_finds_it(hub, tmp_path, model_files):
    out = tmp_path / "fetched"
    env = hub_env(tmp_path, hub.url)
    result = ok(smolvlm(env, "--what", "models", "--set", VISION, "--out", out))
    folder = out / "models" / "org--siglip-tiny"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == WANTED
    assert all((folder / n).read_bytes() == model_files[n] for n in WANTED)
    assert f"--set model.vision.source={folder}" in flat(result.stdout)
    manifest = read_manifest(out)
    assert manifest["models"]["vision"]["path"] == str(folder)
    assert manifest["models"]["vision"]["sha"] == hub.repos["model", MODEL_REPO].sha

    from smolvlm_cli.parts import resolve_vision

    part = resolve_vision(str(folder), load_recipe(TINY, [f"model.vision.source={folder}"]).model)
    assert (part.kind, part.config.hidden_size) == ("dir", 16)

    before = len(hub.requests)
    again = ok(smolvlm(hub_env(tmp_path, hub.url, offline=True), "--what", "models", "--set", VISION, "--out", out))
    assert "present (offline)" in again.stdout and len(hub.requests) == before
    assert manifest["models"]["vision"]["sha"][:12] in again.stdout


# ---------------------------------------------------------------------------------------------------------------
# --dry-run
# ---------------------------------------------------------------------------------------------------------------


def test_dry_run_reports_sizes_and_fetches_nothing(hub, tmp_path, model_files):
    from rich.filesize import decimal

    before = len(hub.requests)
    result = ok(smolvlm(hub_env(tmp_path, hub.url), "--dry-run", "--set", VISION, "--set",
                        f"sources.cauldron.path={DATA_REPO}"))
    text = flat(result.stdout)
    size = sum(len(model_files[n]) for n in WANTED)
    assert f"would fetch 2 of 2 files ({decimal(size)})" in text
    assert "config.json, model.safetensors" in text
    assert f"{N_ROWS} rows {decimal(4321)} would download the split" in text  # from the dataset card
    assert "skipped: built-in synthetic data" in text
    assert [m for m, p in hub.requests[before:] if "/resolve/" in p] == []
    assert not (tmp_path / "hf-home" / "hub" / "models--org--siglip-tiny").exists()
    assert not (tmp_path / "smolvlm-cache" / "downloads").exists()


# ---------------------------------------------------------------------------------------------------------------
# Datasets: the whole split, the first N rows, or left for streaming
# ---------------------------------------------------------------------------------------------------------------


def test_dataset_whole_split_and_streaming_source(hub, tmp_path):
    import datasets

    from smolvlm_cli.data.sources import SourceSpec, load_source

    out = tmp_path / "fetched"
    before = len(hub.downloads())
    result = ok(smolvlm(hub_env(tmp_path, hub.url), "--what", "data", "--out", out,
                        "--set", f"sources.cauldron.path={DATA_REPO}",
                        "--set", f"sources.lazy.path={DATA_REPO}", "--set", "sources.lazy.streaming=true"))
    saved = datasets.load_from_disk(str(out / "data" / "cauldron"))
    assert saved["texts"] == [[{"user": f"q{i}", "assistant": f"a{i}", "source": "tiny"}] for i in range(N_ROWS)]
    assert not (out / "data" / "lazy").exists()
    sha = hub.repos["dataset", DATA_REPO].sha
    # the split's data once, for the whole source; none for the streamed one (which reads the same repo); other
    # files `datasets` reads for itself (the card) are its business
    files = fetched(hub.downloads()[before:], f"datasets/{DATA_REPO}")
    assert [f for f in files if f.endswith(".parquet")] == ["data/train-00000-of-00001.parquet"]
    manifest = read_manifest(out)
    entry = manifest["datasets"]["cauldron"]
    assert (entry["sha"], entry["mode"], entry["rows"], entry["path"]) == (
        sha, "full", N_ROWS, str(out / "data" / "cauldron"))
    assert entry["size"] == sum(f["size"] for f in entry["files"]) > 0
    assert manifest["datasets"]["lazy"]["mode"] == "streaming" and manifest["datasets"]["lazy"]["path"] is None
    assert "left for streaming" in result.stdout

    source = load_source(SourceSpec(path=str(out / "data" / "cauldron")))  # the trainer reads the saved copy
    sample = source.sample(3)
    assert [t.role for t in sample.turns] == ["user", "assistant"] and sample.meta["origin"] == "tiny"


def test_dataset_first_n_rows(hub, tmp_path):
    import datasets

    out = tmp_path / "fetched"
    result = ok(smolvlm(hub_env(tmp_path, hub.url), "--what", "data", "--out", out, "--max-samples", 3,
                        "--set", f"sources.cauldron.path={DATA_REPO}"))
    saved = datasets.load_from_disk(str(out / "data" / "cauldron"))
    assert [t[0]["user"] for t in saved["texts"]] == ["q0", "q1", "q2"]
    assert [img[0].getpixel((0, 0)) for img in saved["images"]] == [(0, 0, 0), (20, 0, 0), (40, 0, 0)]
    assert read_manifest(out)["datasets"]["cauldron"]["mode"] == "first 3"
    assert "first 3: 3 rows" in result.stdout


# ---------------------------------------------------------------------------------------------------------------
# Offline, unreachable, unknown repo: one line, exit 2
# ---------------------------------------------------------------------------------------------------------------


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_offline_with_an_empty_cache_is_one_clear_error(hub, tmp_path):
    before = len(hub.requests)
    line = one_error_line(smolvlm(hub_env(tmp_path, hub.url, offline=True), "--set", VISION,
                                  "--set", f"sources.cauldron.path={DATA_REPO}"))
    assert line == (
        "error: cannot download: HF_HUB_OFFLINE is set; not available locally: vision part org/siglip-tiny, "
        "dataset 'cauldron' org/tiny-cauldron - run smolvlm download where the hub is reachable (--out DIR, then "
        "copy DIR here), or point the recipe at local copies: --set model.vision.source=/path/to/vision-folder "
        "--set sources.cauldron.path=/path/to/data")
    assert len(hub.requests) == before


def test_unreachable_hub_is_one_clear_error(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    line = one_error_line(smolvlm(hub_env(tmp_path, f"http://127.0.0.1:{port}"), "--what", "models",
                                  "--set", "model.text.source=org/lm"))
    assert f"the hub (http://127.0.0.1:{port}) cannot be reached" in line
    assert "not available locally: text part org/lm" in line and "--set model.text.source=/path/to/model.gguf" in line


def test_nothing_to_fetch_writes_nothing(tmp_path):
    result = ok(smolvlm(hub_env(tmp_path, "http://127.0.0.1:9"), "--stage", "video"))
    assert "nothing to fetch" in result.stdout and "skipped: random weights, built by init" in result.stdout
    assert not (tmp_path / "smolvlm-cache" / "downloads").exists()


def test_unknown_repo_names_the_part(hub, tmp_path):
    line = one_error_line(smolvlm(hub_env(tmp_path, hub.url), "--what", "models",
                                  "--set", "model.vision.source=org/nope"))
    assert line.startswith("error: vision part 'org/nope' is not a model repo on the hub - check the id")


# ---------------------------------------------------------------------------------------------------------------
# Pure parts: file selection, planning, dataset cards, manifest, progress adapter
# ---------------------------------------------------------------------------------------------------------------


def test_select_files_keeps_top_level_weights_configs_and_tokenizer():
    repo = ["README.md", ".gitattributes", "config.json", "generation_config.json", "model.safetensors",
            "model-00001-of-00002.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "merges.txt",
            "vocab.json", "tokenizer.json", "tokenizer_config.json", "spiece.model", "chat_template.jinja",
            "onnx/model.onnx", "onnx/config.json", "runs/events.txt"]
    assert select_files(repo, MODEL_FILE_PATTERNS) == [
        "chat_template.jinja", "config.json", "generation_config.json", "merges.txt",
        "model-00001-of-00002.safetensors", "model.safetensors", "model.safetensors.index.json", "spiece.model",
        "tokenizer.json", "tokenizer_config.json", "vocab.json"]
    assert select_files(repo, TOKENIZER_FILE_PATTERNS) == [
        "chat_template.jinja", "config.json", "generation_config.json", "merges.txt", "model.safetensors.index.json",
        "spiece.model", "tokenizer.json", "tokenizer_config.json", "vocab.json"]


def test_plan_skips_what_needs_no_fetching(tmp_path):
    (tmp_path / "siglip").mkdir()
    gguf = tmp_path / "lm.gguf"
    gguf.write_bytes(b"GGUF")
    recipe = load_recipe(TINY, [f"model.vision.source={tmp_path / 'siglip'}", f"model.text.source={gguf}",
                                "model.text.tokenizer=org/tok", f"sources.local.path={tmp_path}",
                                "sources.hub.path=org/data", "sources.hub.config=ai2d"])
    plan = plan_downloads(recipe)
    assert [(i.kind, i.name, i.skip) for i in plan[:3]] == [
        ("model", "vision", "local folder"), ("model", "text", "local GGUF file"), ("model", "tokenizer", None)]
    assert {i.name: i.skip for i in plan[3:]} == {
        **{name: "built-in synthetic data" for name in recipe.sources if name not in ("local", "hub")},
        "local": "local data", "hub": None}
    hub_item = plan[-1]
    assert (hub_item.ref, hub_item.config, hub_item.split, hub_item.set_key) == ("org/data", "ai2d", "train",
                                                                               "sources.hub.path")
    assert [i.name for i in plan_downloads(recipe, "models")] == ["vision", "text", "tokenizer"]


def test_plan_by_stage_lists_that_stages_sources_once():
    recipe = load_recipe(TINY)
    assert [i.name for i in plan_downloads(recipe, "data", "video")] == [
        "direction", "direction_llava", "colour_sequence", "colour", "position", "text", "compare"]
    assert [i.name for i in plan_downloads(recipe, "data", "vision")] == [
        "colour_cauldron", "ocr", "count", "position", "colour"]


def test_plan_rejects_bad_choices_and_references(tmp_path):
    recipe = load_recipe(TINY)
    with pytest.raises(RecipeError, match="has no stage 'audio'"):
        plan_downloads(recipe, "all", "audio")
    with pytest.raises(UserError, match="--what 'weights' is not one of models, data, all"):
        plan_downloads(recipe, "weights")
    bad = load_recipe(TINY, [f"model.text.source={tmp_path / 'missing.gguf'}"])
    with pytest.raises(RecipeError, match="text part .* is neither a local folder / .gguf file nor a hub id"):
        plan_downloads(bad)
    with pytest.raises(RecipeError, match="dataset 'x' path 'data/x.parquet' is neither local data nor a hub"):
        plan_downloads(load_recipe(TINY, ["sources.x.path=data/x.parquet"]), "data")


def test_card_split_info():
    card = {"dataset_info": [
        {"config_name": "ai2d", "splits": [{"name": "train", "num_examples": 2434}], "download_size": 438136609},
        {"config_name": "chartqa", "splits": [{"name": "train", "num_examples": 18265}]}]}
    assert card_split_info(card, "ai2d", "train") == (2434, 438136609)
    assert card_split_info(card, "chartqa", "train") == (18265, None)
    assert card_split_info(card, "chartqa", "test") == (None, None)
    assert card_split_info(card, "vqav2", "train") == (None, None)
    single = {"dataset_info": {"splits": [{"name": "train", "num_examples": 7}], "download_size": 99}}
    assert card_split_info(single, None, "train") == (7, 99)
    assert card_split_info(None, None, "train") == card_split_info({"license": "mit"}, None, "train") == (None, None)


def test_read_manifest_errors(tmp_path):
    with pytest.raises(UserError, match="download manifest '.*manifest.json' not found"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{nope")
    with pytest.raises(UserError, match="is not valid JSON"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": 1, "models": {}}))
    with pytest.raises(UserError, match="is not a smolvlm download manifest"):
        read_manifest(tmp_path / "manifest.json")
    good = {"format": 1, "recipe": "r", "models": {}, "datasets": {}}
    (tmp_path / "manifest.json").write_text(json.dumps(good))
    assert read_manifest(tmp_path) == good


def test_rich_tqdm_forwards_hub_progress_to_rich():
    from rich.console import Console
    from rich.progress import Progress

    progress = Progress(console=Console(file=io.StringIO()))
    bar_class = rich_tqdm(progress, "org/x: ")
    bytes_bar = bar_class(total=100, initial=10, desc="Downloading", unit="B", name="huggingface_hub.x")
    files_bar = bar_class(total=3, desc="Fetching 3 files")
    bytes_bar.update(40)
    bytes_bar.total = 200  # huggingface_hub grows aggregate totals as files start
    bytes_bar.refresh()
    files_bar.update()
    files_bar.set_description("done")
    bytes_bar.close()
    tasks = {t.description: t for t in progress.tasks}
    assert (tasks["org/x: Downloading"].completed, tasks["org/x: Downloading"].total,
            tasks["org/x: Downloading"].fields) == (50, 200, {"bytes": True})
    assert (tasks["org/x: done"].completed, tasks["org/x: done"].total, tasks["org/x: done"].fields) == (
        1, 3, {"bytes": False})


def test_git_blob_id_matches_git():
    assert git_blob_id(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # `git hash-object /dev/null`

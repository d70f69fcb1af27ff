"""Starting from a released model: `smolvlm download --model ID` against the loopback fake hub (tests/hub_server.py;
the tiny model stands in for SmolVLM2-256M), offline with and without it, then `train-vision --init ID` finding it in
the Hugging Face cache, and the recipe's model section checked against the checkpoint it starts from."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from smolvlm_cli.download import read_manifest
from smolvlm_cli.errors import RecipeError, UserError
from smolvlm_cli.recipe import load_recipe
from smolvlm_cli.train.run import check_model_section, resolve_init
from tests.conftest import ROOT, TINY_RECIPE
from tests.hub_server import FakeHub
from tests.integration.test_download import flat, hub_env, ok, one_error_line

REPO = "org/tiny-smolvlm"
CACHE_DIR = "models--org--tiny-smolvlm"
# a real repo's files download leaves out: a card, pickled weights, files in sub-folders, a training recipe
EXTRA = {"README.md": b"# tiny\n", ".gitattributes": b"*.safetensors filter=lfs\n",
         "pytorch_model.bin": b"pickled weights are never fetched", "onnx/config.json": b"{}",
         "onnx/model.onnx": b"onnx"}
# one small phase: a step costs little on a CPU
PHASE = ("stages.vision.phases=[{name: p, steps: 5, global_batch_size: 2, micro_batch_size: 2, max_seq_len: 256, "
         "group_by_length: false, schedule: {type: constant, warmup_steps: 0}, "
         "parts: {vision: {mode: frozen}, connector: {mode: full, lr: 1.0e-3}, text: {mode: frozen}, "
         "embeddings: {mode: frozen}}, data: [{source: colour, weight: 1}]}]")


def wanted(model_dir: Path) -> list[str]:
    """The checkpoint's files download fetches: weights, configs, processor, tokenizer, chat template."""
    return sorted(p.name for p in model_dir.iterdir() if p.is_file() and p.name != "recipe.yaml")


@pytest.fixture(scope="module")
def hub(tiny_model_dir):
    with FakeHub() as server:
        repo = server.add_folder(REPO, tiny_model_dir)
        repo.files.update(EXTRA)
        server.add("org/pickled", {"config.json": b"{}", "pytorch_model.bin": b"weights"})
        yield server


def smolvlm(env: dict, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smolvlm_cli.cli", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def snapshot(tmp: Path, hub: FakeHub) -> Path:
    return tmp / "hf-home" / "hub" / CACHE_DIR / "snapshots" / hub.repos["model", REPO].sha


@pytest.fixture(scope="module")
def cached(hub, tmp_path_factory):
    """`download --model` into a fresh Hugging Face cache."""
    tmp = tmp_path_factory.mktemp("checkpoint")
    env = hub_env(tmp, hub.url)
    before = len(hub.downloads())
    result = ok(smolvlm(env, "download", "--model", REPO))
    return {"tmp": tmp, "env": env, "result": result, "gets": hub.downloads()[before:]}


def test_download_model_fetches_only_the_needed_files_into_the_cache(cached, hub, tiny_model_dir):
    folder = snapshot(cached["tmp"], hub)
    names = wanted(tiny_model_dir)
    assert "model.safetensors" in names and "chat_template.jinja" in names and "processor_config.json" in names
    assert sorted(p.name for p in folder.iterdir()) == names
    assert all((folder / n).read_bytes() == (tiny_model_dir / n).read_bytes() for n in names)
    assert sorted(g.split("/", 5)[-1] for g in cached["gets"]) == names  # each once, nothing else
    repo_dir = cached["tmp"] / "hf-home" / "hub" / CACHE_DIR
    assert (repo_dir / "refs" / "main").read_text() == hub.repos["model", REPO].sha  # --init ID finds it by branch
    text = flat(cached["result"].stdout)
    assert f"fetched {len(names)} of {len(names)} files" in text
    assert f"train from it with: smolvlm train-vision --recipe RECIPE --init {REPO} --out RUN" in text


def test_download_model_writes_a_manifest(cached, hub, tiny_model_dir):
    manifest = read_manifest(cached["tmp"] / "smolvlm-cache" / "downloads" / "org--tiny-smolvlm")
    entry = manifest["models"]["checkpoint"]
    names = wanted(tiny_model_dir)
    assert manifest["recipe"] == REPO and manifest["datasets"] == {}
    assert entry == {"repo_id": REPO, "requested_revision": None, "sha": hub.repos["model", REPO].sha,
                     "path": str(snapshot(cached["tmp"], hub)),
                     "files": [{"path": n, "size": (tiny_model_dir / n).stat().st_size} for n in names],
                     "size": sum((tiny_model_dir / n).stat().st_size for n in names)}


def test_second_download_fetches_nothing(cached, hub):
    before = len(hub.downloads())
    result = ok(smolvlm(cached["env"], "download", "--model", REPO))
    assert hub.downloads()[before:] == [] and "already present" in result.stdout


def test_dry_run_fetches_nothing(hub, tmp_path, tiny_model_dir):
    before = len(hub.requests)
    result = ok(smolvlm(hub_env(tmp_path, hub.url), "download", "--model", REPO, "--dry-run"))
    n = len(wanted(tiny_model_dir))
    assert f"would fetch {n} of {n} files" in flat(result.stdout)
    assert "model.safetensors" in result.stdout and "pytorch_model.bin" not in result.stdout
    assert [p for m, p in hub.requests[before:] if "/resolve/" in p] == []
    assert not (tmp_path / "hf-home" / "hub" / CACHE_DIR).exists()
    assert not (tmp_path / "smolvlm-cache" / "downloads").exists()


def test_offline_without_the_model_is_one_error_line(hub, tmp_path):
    before = len(hub.requests)
    line = one_error_line(smolvlm(hub_env(tmp_path, hub.url, offline=True), "download", "--model", REPO))
    assert line == (
        f"error: cannot download: HF_HUB_OFFLINE is set; not available locally: checkpoint {REPO} - run smolvlm "
        "download where the hub is reachable (--out DIR, then copy DIR here), or train from a local copy: "
        "--init /path/to/folder")
    assert len(hub.requests) == before


def test_offline_with_the_model_in_the_cache_succeeds(cached, hub):
    env = {**cached["env"], "HF_HUB_OFFLINE": "1"}
    before = len(hub.requests)
    result = ok(smolvlm(env, "download", "--model", REPO))
    assert "present (offline)" in result.stdout and hub.repos["model", REPO].sha[:12] in result.stdout
    # found in the cache itself, without the manifest (as after `hf download`)
    bare = ok(smolvlm({**env, "SMOLVLM_CACHE": str(cached["tmp"] / "other-cache")}, "download", "--model", REPO))
    assert "present (offline)" in bare.stdout
    assert len(hub.requests) == before


def test_out_folder_and_offline_rerun(hub, tmp_path, tiny_model_dir):
    out = tmp_path / "fetched"
    result = ok(smolvlm(hub_env(tmp_path, hub.url), "download", "--model", REPO, "--out", out))
    folder = out / "models" / "org--tiny-smolvlm"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == wanted(tiny_model_dir)
    assert read_manifest(out)["models"]["checkpoint"]["path"] == str(folder)
    assert f"--init {folder}" in flat(result.stdout)
    assert resolve_init(folder) == folder
    again = ok(smolvlm(hub_env(tmp_path, hub.url, offline=True), "download", "--model", REPO, "--out", out))
    assert "present (offline)" in again.stdout


def test_repo_errors_name_the_checkpoint(hub, tmp_path):
    env = hub_env(tmp_path, hub.url)
    line = one_error_line(smolvlm(env, "download", "--model", "org/nope"))
    assert line.startswith("error: checkpoint 'org/nope' is not a model repo on the hub - check the id")
    assert line.endswith("or fix --model")
    line = one_error_line(smolvlm(env, "download", "--model", "org/pickled"))
    assert line.startswith("error: checkpoint 'org/pickled' has no safetensors weights at its top level")
    line = one_error_line(smolvlm(env, "download", "--model", REPO, "--revision", "v9"))
    assert line == (f"error: checkpoint '{REPO}' has no revision 'v9' - fix --revision (a branch, tag or commit "
                    "sha)")


@pytest.mark.parametrize("args, message", [
    ([], "error: smolvlm download needs --recipe or --model - pass --recipe recipes/NAME.yaml"),
    (["--model", REPO, "--stage", "video"], "error: --stage does not go with --model"),
    (["--model", REPO, "--recipe", TINY_RECIPE], "error: --recipe does not go with --model"),
    (["--recipe", TINY_RECIPE, "--revision", "main"], "error: --revision goes with --model"),
    (["--model", "./local/folder"], "error: --model './local/folder' is not a hub model id"),
])
def test_option_errors(cli, args, message):
    res = cli("download", *args)
    assert res.exit_code == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), res.stderr


# ---------------------------------------------------------------------------------------------------------------
# --init ID, and the recipe's model section against the checkpoint
# ---------------------------------------------------------------------------------------------------------------


def test_train_vision_starts_from_a_downloaded_hub_id(cached, hub, tmp_path):
    """The checkpoint `download --model` put in the cache is found by its id, offline, and trains."""
    import os

    run = tmp_path / "run"
    env = {**cached["env"], "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cached["tmp"] / "hf-home" / "hub"),
           "SMOLVLM_CACHE": os.environ["SMOLVLM_CACHE"], "OMP_NUM_THREADS": "1"}  # the session's synthetic data
    env = {k: v for k, v in env.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                     "MASTER_PORT", "LOCAL_WORLD_SIZE")}
    before = len(hub.requests)
    result = smolvlm(env, "train-vision", "--recipe", TINY_RECIPE, "--init", REPO, "--out", run, "--set", PHASE,
                     "--max-steps", 1, "--deepspeed", "zero2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert len(hub.requests) == before
    stamp = json.loads((run / "run.json").read_text())
    assert stamp["init"] == str(snapshot(cached["tmp"], hub))
    steps = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert [r["step"] for r in steps] == [1]
    assert (run / "phases" / "00-p" / "model.safetensors").is_file()


def test_init_with_an_uncached_hub_id_is_one_error_line(cli, tmp_path):
    res = cli("train-vision", "--recipe", TINY_RECIPE, "--init", "owner/missing", "--out", tmp_path / "run")
    assert res.exit_code == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines == ["error: --init 'owner/missing' is not a local folder, and no checkpoint 'owner/missing' is in "
                     "the local Hugging Face cache - fetch it with smolvlm download --model owner/missing, or pass "
                     "a model or run folder"], res.stderr
    assert not (tmp_path / "run").exists()


def test_recipe_model_section_disagreeing_with_the_checkpoint_stops(cli, tiny_model_dir, tmp_path):
    res = cli("train-vision", "--recipe", TINY_RECIPE, "--init", tiny_model_dir, "--out", tmp_path / "run",
              "--set", "model.text.hidden_size=960")
    assert res.exit_code == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines == [f"error: recipe model.text.hidden_size is 960 but checkpoint {tiny_model_dir} has "
                     "text_config.hidden_size 64 - fix the recipe's model section (e.g. --set model.KEY=VALUE) or "
                     "pick the matching checkpoint"], res.stderr
    assert not (tmp_path / "run").exists()


def test_a_recipe_without_a_model_section_cannot_init(cli, tmp_path):
    import yaml

    data = yaml.safe_load(Path(TINY_RECIPE).read_text())
    del data["model"]
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({**data, "name": "no-model"}))
    assert load_recipe(tmp_path / "r.yaml").model is None
    res = cli("init", "--recipe", tmp_path / "r.yaml", "--out", tmp_path / "m")
    assert (res.exit_code, res.stderr.strip()) == (2, "error: recipe 'no-model' has no model section, which smolvlm "
                                                      "init needs - add one (see recipes/smolvlm2-256m.yaml)")
    assert not (tmp_path / "m").exists()


def test_check_model_section_compares_only_what_the_recipe_states(tiny_model_dir):
    check_model_section(load_recipe(TINY_RECIPE), tiny_model_dir)  # the recipe the tiny model was built from
    check_model_section(load_recipe(TINY_RECIPE, ["model.vision.hidden_size=null", "model.text.hidden_size=null",
                                                  "model.rope_theta=null"]), tiny_model_dir)
    recipe = load_recipe(TINY_RECIPE, ["model.vision.image_size=128", "model.vision.patch_size=16",
                                       "model.processor.longest_edge=128", "model.max_position_embeddings=8192"])
    with pytest.raises(RecipeError) as e:
        check_model_section(recipe, tiny_model_dir, "org/x")
    assert e.value.message == (
        "recipe model.vision.image_size is 128 but checkpoint org/x has vision_config.image_size 64; "
        "model.vision.patch_size is 16 but checkpoint org/x has vision_config.patch_size 8; "
        "model.max_position_embeddings is 8192 but checkpoint org/x has text_config.max_position_embeddings 2048")


def test_other_checkpoints_are_refused(tmp_path, tiny_model_dir):
    v1 = tmp_path / "v1"
    shutil.copytree(tiny_model_dir, v1)
    (v1 / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(UserError, match=r"is not a SmolVLM model folder \(model_type llama\)"):
        resolve_init(v1)

"""Launch options and launcher environments, without starting processes: Slurm node lists, the srun mapping,
hostfiles, the checks on the options and the exact launcher commands they become."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from smolvlm_cli.train.launch import (Launch, LaunchError, check, expand_nodelist, launch_command, read_hostfile,
                                      relaunch, slurm_env)


@pytest.mark.parametrize("text, hosts", [
    ("gpu[01-03,07]", ["gpu01", "gpu02", "gpu03", "gpu07"]),
    ("a1,b[2-3]", ["a1", "b2", "b3"]),
    ("node-[001-004]", ["node-001", "node-002", "node-003", "node-004"]),
    ("node[8-10]", ["node8", "node9", "node10"]),
    ("node[098-101]", ["node098", "node099", "node100", "node101"]),
    ("r[1-2]n[08-09]", ["r1n08", "r1n09", "r2n08", "r2n09"]),
    ("login1", ["login1"]),
    ("x[3],gpu-a[1-2]-ib,y", ["x3", "gpu-a1-ib", "gpu-a2-ib", "y"]),
    ("127.0.0.[1-2]", ["127.0.0.1", "127.0.0.2"]),
])
def test_nodelist_expands_like_scontrol(text, hosts):
    assert expand_nodelist(text) == hosts


@pytest.mark.parametrize("text", ["", "gpu[01-03", "gpu01-03]", "gpu[a-c]", "gpu[3-1]", "gpu[1-2]]", "gpu[[1]]",
                                  "gpu[]"])
def test_unreadable_nodelists_are_user_errors(text):
    with pytest.raises(LaunchError, match="Slurm node list"):
        expand_nodelist(text)


SRUN = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1", "SLURM_JOB_NODELIST": "gpu[07-08]",
        "SLURM_JOB_ID": "123456"}


def test_srun_variables_map_to_torch_distributed():
    assert slurm_env(SRUN) == {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "gpu07",
                               "MASTER_PORT": "23456"}  # 20000 + 123456 % 20000


def test_srun_mapping_keeps_what_is_set_and_yields_to_other_launchers():
    given = slurm_env({**SRUN, "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "40000"})
    assert given == {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}
    assert slurm_env({**SRUN, "RANK": "0"}) == {}  # torchrun / deepspeed inside an srun step
    assert slurm_env({"PATH": "/bin"}) == {}
    older = {k: v for k, v in SRUN.items() if k != "SLURM_JOB_NODELIST"}
    assert slurm_env({**older, "SLURM_NODELIST": "a1,b[2-3]"})["MASTER_ADDR"] == "a1"
    with pytest.raises(LaunchError, match="SLURM_NTASKS or SLURM_JOB_NODELIST"):
        slurm_env({k: v for k, v in SRUN.items() if k != "SLURM_NTASKS"})


def _hostfile(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hostfile"
    path.write_text(text)
    return path


def test_hostfile_is_read_in_order_and_bad_ones_are_refused(tmp_path):
    good = _hostfile(tmp_path, "# two nodes\nworker-1 slots=4\n\n  worker-0   slots=2  \n")
    assert list(read_hostfile(good).items()) == [("worker-1", 4), ("worker-0", 2)]
    for text, message in [("a slots=1\na slots=2\n", "names host 'a' twice"), ("# none\n", "lists no hosts"),
                          ("a slots=1\nb\n", "line 2 is not 'HOST slots=N'"), ("a slots=0\n", "line 1")]:
        with pytest.raises(LaunchError, match=message):
            read_hostfile(_hostfile(tmp_path, text))
    with pytest.raises(LaunchError, match="hostfile '.*missing' not found"):
        read_hostfile(tmp_path / "missing")


@pytest.mark.parametrize("options, message", [
    (dict(nproc=0), "must be at least 1"),
    (dict(node_rank=1), "are for multi-node runs"),
    (dict(master_addr="10.0.0.1"), "are for multi-node runs"),
    (dict(master_port=29501), "are for multi-node runs"),
    (dict(nnodes=2), "--nnodes 2 needs --node-rank and --master-addr"),
    (dict(nnodes=2, node_rank=0), "needs --node-rank and --master-addr"),
    (dict(nnodes=2, node_rank=2, master_addr="a"), r"--node-rank 2 is not in 0..1 \(2 nodes\)"),
    (dict(no_ssh=True), "--no-ssh needs --hostfile"),
    (dict(hostfile=True, nproc=2), "cannot be combined with --hostfile"),
    (dict(hostfile=True, nnodes=2), "cannot be combined with --hostfile"),
    (dict(hostfile=True, node_rank=1), "--node-rank with --hostfile needs --no-ssh"),
    (dict(hostfile=True, no_ssh=True, master_addr="a"), "--no-ssh needs --node-rank and --master-addr"),
    (dict(hostfile=True, no_ssh=True, node_rank=2, master_addr="a"), r"not in 0..1 \(2 nodes\)"),
])
def test_contradictory_or_incomplete_launch_options_are_refused(tmp_path, options, message):
    if options.get("hostfile"):
        options["hostfile"] = _hostfile(tmp_path, "node0 slots=1\nnode1 slots=1\n")
    with pytest.raises(LaunchError, match=message):
        check(Launch(**options))


ARGV = ["--debug", "train-vision", "--recipe", "r.yaml", "--nproc", "1", "--nnodes=2", "--node-rank", "1",
        "--master-addr", "10.0.0.1", "--master-port=29501", "--set", "seed=3", "--init", "m", "--out", "o"]
RANK_ARGS = ["--debug", "train-vision", "--recipe", "r.yaml", "--set", "seed=3", "--init", "m", "--out", "o"]


def test_multi_node_torchrun_command():
    launch = Launch(nproc=1, nnodes=2, node_rank=1, master_addr="10.0.0.1", master_port=29501)
    assert launch_command(launch, ARGV) == [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--node_rank=1", "--master_addr=10.0.0.1",
        "--master_port=29501", "--nproc_per_node=1", "-m", "smolvlm_cli.cli", *RANK_ARGS]
    default_port = launch_command(Launch(nproc=8, nnodes=4, node_rank=0, master_addr="n0"), RANK_ARGS)
    assert "--master_port=29500" in default_port and "--nproc_per_node=8" in default_port


def test_single_node_torchrun_command_picks_a_free_local_port():
    cmd = launch_command(Launch(nproc=2), ["train-vision", "--nproc=2", "--out", "o"])
    assert cmd[:4] == [sys.executable, "-m", "torch.distributed.run", "--master_addr=127.0.0.1"]
    assert cmd[4].startswith("--master_port=") and int(cmd[4].split("=")[1]) > 0
    assert cmd[5:] == ["--nproc_per_node=2", "-m", "smolvlm_cli.cli", "train-vision", "--out", "o"]


def test_hostfile_commands_go_through_the_deepspeed_runner_without_local_rank(tmp_path):
    hostfile = _hostfile(tmp_path, "node0 slots=1\nnode1 slots=1\n")
    argv = ["train-video", "--hostfile", str(hostfile), "--no-ssh", "--node-rank=1", "--master-addr", "10.0.0.1",
            "--out", "o"]
    runner = [sys.executable, "-m", "deepspeed.launcher.runner", f"--hostfile={hostfile}", "--no_local_rank"]
    no_ssh = Launch(hostfile=hostfile, no_ssh=True, node_rank=1, master_addr="10.0.0.1")
    assert launch_command(no_ssh, argv) == [*runner, "--master_port=29500", "--master_addr=10.0.0.1", "--no_ssh",
                                            "--node_rank=1", "--module", "smolvlm_cli.cli", "train-video", "--out",
                                            "o"]
    over_ssh = Launch(hostfile=hostfile, master_port=29600)
    assert launch_command(over_ssh, ["train-vision", f"--hostfile={hostfile}", "--master-port", "29600"]) == [
        *runner, "--master_port=29600", "--module", "smolvlm_cli.cli", "train-vision"]


def test_relaunch_refuses_inside_a_launcher_and_without_pdsh(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(LaunchError, match="a launcher started \\(RANK is set\\)"):
        relaunch(Launch(nproc=2))
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setenv("PATH", str(tmp_path))  # no pdsh here
    with pytest.raises(LaunchError) as err:
        relaunch(Launch(hostfile=_hostfile(tmp_path, "node0 slots=1\n")))
    assert err.value.one_line() == ("--hostfile starts the nodes over ssh with pdsh, which is not installed - install "
                                    "pdsh, or run on each node: --hostfile FILE --no-ssh --node-rank R --master-addr "
                                    "NODE0")


def test_cli_reports_launch_mistakes_in_one_line(cli, tmp_path):
    res = cli("train-vision", "--recipe", "r.yaml", "--init", "m", "--out", tmp_path / "o", "--nnodes", "2",
              "--node-rank", "0")
    assert res.exit_code == 2
    assert res.stderr.strip() == ("error: --nnodes 2 needs --node-rank and --master-addr - run the same command on "
                                  "every node with its own --node-rank (0 on the node at --master-addr)")
    res = cli("train-video", "--recipe", "r.yaml", "--init", "m", "--out", tmp_path / "o", "--hostfile",
              tmp_path / "nowhere")
    assert res.exit_code == 2 and "hostfile" in res.stderr and "not found" in res.stderr
    assert not (tmp_path / "o").exists()


SBATCH = Path(__file__).resolve().parents[2] / "examples" / "slurm" / "train_256m_vision.sbatch"
FAKES = {  # the Slurm commands and smolvlm, recording how the script calls them
    "srun": 'echo "$*" >> "$RECORD/srun"; echo "$HF_HUB_OFFLINE $OMP_NUM_THREADS" >> "$RECORD/srun.env"\n'
            'exit "$FAKE_SRUN_EXIT"',  # 138: the ranks stopped on USR1 after a checkpoint
    "scontrol": 'echo "$*" >> "$RECORD/scontrol"',
    "smolvlm": 'echo "$*" >> "$RECORD/smolvlm"; mkdir -p "$5"; touch "$5/config.json"',
}


def _sbatch(tmp_path: Path, srun_exit: int, restarts: int):
    import os
    import subprocess

    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "RECORD": str(tmp_path), "FAKE_SRUN_EXIT": str(srun_exit),
           "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu[01-04]", "SLURM_NTASKS": "32",
           "SLURM_CPUS_PER_TASK": "12", "SLURM_RESTART_COUNT": str(restarts), "HOME": os.environ["HOME"]}
    return subprocess.Popen(["bash", str(SBATCH)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)


def test_sbatch_example_requeues_after_the_signal_checkpoint_and_reruns_the_same_command(tmp_path):
    head = [line.split()[1] for line in SBATCH.read_text().splitlines() if line.startswith("#SBATCH")]
    assert "--requeue" in head and "--signal=USR1@120" in head and "--open-mode=append" in head
    per_node = {k: v for k, _, v in (o.partition("=") for o in head)}
    assert per_node["--ntasks-per-node"] == per_node["--gpus-per-node"]  # one task per GPU
    (tmp_path / "bin").mkdir()
    for name, body in FAKES.items():
        (tmp_path / "bin" / name).write_text(f"#!/bin/bash\n{body}\n")
        (tmp_path / "bin" / name).chmod(0o755)
    first = _sbatch(tmp_path, srun_exit=138, restarts=0)  # the ranks checkpointed and stopped on USR1
    out, _ = first.communicate(timeout=20)
    assert first.returncode == 0 and "requeueing job 4242" in out
    assert (tmp_path / "scontrol").read_text() == "requeue 4242\n"
    second = _sbatch(tmp_path, srun_exit=0, restarts=1)  # the requeued job: same script, same variables
    out, _ = second.communicate(timeout=20)
    assert second.returncode == 0 and "start 2: 32 tasks" in out
    assert (tmp_path / "scontrol").read_text() == "requeue 4242\n"  # a finished run is not requeued
    assert (tmp_path / "smolvlm").read_text() == (  # the model is assembled once, by the first start
        "init --recipe recipes/smolvlm2-256m.yaml --out runs/smolvlm2-256m/init\n")
    command = ("--kill-on-bad-exit=1 smolvlm train-vision --recipe recipes/smolvlm2-256m.yaml "
               "--init runs/smolvlm2-256m/init --out runs/smolvlm2-256m/vision\n")
    assert (tmp_path / "srun").read_text() == command * 2  # the same command: it resumes from the checkpoint
    assert (tmp_path / "srun.env").read_text() == "1 12\n" * 2

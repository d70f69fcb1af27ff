"""Four ways to launch, one result: the same few ZeRO-3 steps of the tiny recipe (real DeepSpeed, gloo, CPU) give
the same losses on 1 process, `--nproc 2`, two torchrun "nodes", two DeepSpeed-launcher nodes (no ssh, and over
ssh through stand-in pdsh/ssh commands), the DeepSpeed launcher started by hand, and srun's variables."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import TINY_RECIPE

STEPS = 3
# one small phase, every part trained: global batch 8 splits evenly over 1, 2 and 4 processes
PHASE = ("stages.vision.phases=[{name: p, steps: 10, global_batch_size: 8, micro_batch_size: 2, max_seq_len: 256, "
         "group_by_length: false, schedule: {type: constant, warmup_steps: 0}, "
         "parts: {vision: {mode: full, lr: 1.0e-3}, connector: {mode: full, lr: 1.0e-3}, "
         "text: {mode: full, lr: 1.0e-3}, embeddings: {mode: full, lr: 1.0e-3}}, "
         "data: [{source: colour, weight: 1}]}]")
LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE",
              "CUDA_VISIBLE_DEVICES")
TIMEOUT = 420


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any launcher's or Slurm's variables; one thread a process on the 2-core runners."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV and not k.startswith("SLURM_")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}  # logs survive a kill


def train_args(model: Path, out: Path) -> list[str]:
    return ["train-vision", "--recipe", str(TINY_RECIPE), "--init", str(model), "--out", str(out), "--set", PHASE,
            "--max-steps", str(STEPS)]


def smolvlm(*args: str) -> list[str]:
    return [sys.executable, "-m", "smolvlm_cli.cli", *args]


def _kill_all(procs: list[psutil.Process]) -> None:
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=10)


def _tree(pid: int) -> dict:
    try:
        root = psutil.Process(pid)
        return {(p.pid, p.create_time()): p for p in [root, *root.children(recursive=True)]}
    except psutil.Error:  # gone already
        return {}


def run_together(jobs: list[tuple[list[str], dict]], logs: Path, cwd: Path | None = None) -> list[int]:
    """Start every command at once and wait for all. Launchers put ranks in new sessions (torchrun: setsid), so
    killing a process group is not enough: every process ever seen below ours is SIGKILLed when one fails or the
    time runs out, and the logs of all come with the failure."""
    logs.mkdir(parents=True, exist_ok=True)
    roots, seen = [], {}
    for i, (cmd, env) in enumerate(jobs):
        with open(logs / f"{i}.log", "w") as log:
            roots.append(subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
    deadline = time.monotonic() + TIMEOUT
    codes: list[int | None] = [None] * len(roots)
    try:
        while time.monotonic() < deadline:
            for root in roots:
                if root.poll() is None:  # not reaped: its pid cannot belong to another process yet
                    seen.update(_tree(root.pid))
            codes = [r.poll() for r in roots]  # None: still running (at the deadline: timed out)
            if all(c is not None for c in codes) or any(c not in (None, 0) for c in codes):
                break
            time.sleep(0.5)
    finally:
        for root in roots:
            if root.poll() is None:
                seen.update(_tree(root.pid))
        _kill_all(list(seen.values()))
    tails = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(logs.glob("*.log")))
    assert codes == [0] * len(jobs), f"exit codes {codes} (None: killed, still running)\n{tails}"
    return codes


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def world_size(run: Path) -> int:
    """How many ranks trained: the checkpoint records it, and the last step logs one peak memory per rank."""
    state = json.loads((run / "checkpoints" / f"phase0-step{STEPS:08d}" / "trainer_state.json").read_text())
    assert len(metrics(run)[-1]["peak_rss_mb"]) == state["world_size"]
    return state["world_size"]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, tiny_model_dir) -> dict:
    out = tmp_path_factory.mktemp("launch") / "one"
    run_together([(smolvlm(*train_args(tiny_model_dir, out)), clean_env(OMP_NUM_THREADS="2"))], out.parent / "logs")
    assert world_size(out) == 1
    return {"losses": [m["loss"] for m in metrics(out)], "model": tiny_model_dir}


def assert_same_run(run: Path, baseline: dict, world: int = 2) -> None:
    assert world_size(run) == world
    losses = [m["loss"] for m in metrics(run)]
    assert len(losses) == len(baseline["losses"]) == STEPS
    assert max(abs(a - b) for a, b in zip(losses, baseline["losses"])) < 1e-5, (losses, baseline["losses"])
    assert (run / "phases" / "00-p" / "model.safetensors").is_file()


def test_nproc_2_on_one_machine(tmp_path, baseline):
    run = tmp_path / "run"
    run_together([(smolvlm(*train_args(baseline["model"], run), "--nproc", "2"), clean_env())], tmp_path / "logs")
    assert_same_run(run, baseline)


def test_torchrun_two_nodes(tmp_path, baseline):
    run, port = tmp_path / "run", str(free_port())
    node = ["--nnodes", "2", "--nproc", "1", "--master-addr", "127.0.0.1", "--master-port", port]
    run_together([(smolvlm(*train_args(baseline["model"], run), *node, "--node-rank", str(r)), clean_env())
                  for r in (0, 1)], tmp_path / "logs")
    assert_same_run(run, baseline)


def _two_host_file(tmp_path: Path) -> Path:
    # the hosts are only names here: without ssh, each launch starts its own line's slots and meets at --master-addr
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node0 slots=1\nnode1 slots=1\n")
    return hostfile


def test_hostfile_without_ssh_two_nodes(tmp_path, baseline):
    run, port = tmp_path / "run", str(free_port())
    node = ["--hostfile", str(_two_host_file(tmp_path)), "--no-ssh", "--master-addr", "127.0.0.1",
            "--master-port", port]
    run_together([(smolvlm(*train_args(baseline["model"], run), *node, "--node-rank", str(r)), clean_env())
                  for r in (0, 1)], tmp_path / "logs")
    assert_same_run(run, baseline)


FAKE_PDSH = '''
import subprocess, sys
# pdsh -S -f FANOUT -w host0,host1 COMMAND...: run COMMAND once per host, %n = the host's number, as ssh would:
# through a shell, in a fresh login environment (nothing of the caller's but what COMMAND exports)
args, hosts = sys.argv[1:], []
while args and args[0].startswith("-"):
    if args[0] in ("-w", "-f"):
        hosts = args[1].split(",") if args[0] == "-w" else hosts
        args = args[2:]
    else:
        args = args[1:]
command = " ".join(args)
login = {"HOME": HOME, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
procs = [subprocess.Popen(["bash", "-c", command.replace("%n", str(n)).replace("%h", h)], env=login)
         for n, h in enumerate(hosts)]
sys.exit(max(p.wait() for p in procs))
'''
FAKE_SSH = '''
import subprocess, sys
# ssh [-o OPT] [-p PORT] HOST COMMAND...: run COMMAND here
args = sys.argv[1:]
while args[0].startswith("-"):
    args = args[2:]
sys.exit(subprocess.call(["bash", "-c", " ".join(args[1:])]))
'''


def _stand_ins(bin_dir: Path) -> None:
    bin_dir.mkdir()
    for name, body in (("pdsh", FAKE_PDSH), ("ssh", FAKE_SSH)):
        (bin_dir / name).write_text(f"#!{sys.executable}\nHOME = {os.environ['HOME']!r}\n{body}")
        (bin_dir / name).chmod(0o755)


def test_hostfile_over_ssh_starts_every_node(tmp_path, baseline):
    """The default --hostfile mode, with stand-ins for pdsh and ssh (no sshd here) that run each node's command on
    this machine in a login environment: what a rank needs beyond the PYTHON* variables travels in .deepspeed_env,
    as on a real cluster."""
    _stand_ins(tmp_path / "bin")
    (tmp_path / ".deepspeed_env").write_text("".join(f"{k}={os.environ[k]}\n" for k in
                                                     ("SMOLVLM_CACHE", "HF_HUB_OFFLINE")) + "OMP_NUM_THREADS=1\n")
    run = tmp_path / "run"
    env = clean_env(PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    cmd = smolvlm(*train_args(baseline["model"], run), "--hostfile", str(_two_host_file(tmp_path)),
                  "--master-addr", "127.0.0.1", "--master-port", str(free_port()))
    run_together([(cmd, env)], tmp_path / "logs", cwd=tmp_path)  # the runner reads ./.deepspeed_env
    assert_same_run(run, baseline)


def test_deepspeed_launcher_by_hand_passes_local_rank(tmp_path, baseline):
    run = tmp_path / "run"
    deepspeed = Path(sys.executable).parent / "deepspeed"  # the `deepspeed` command of this environment
    cmd = [str(deepspeed), "--num_gpus", "2", "--master_port", str(free_port()), "--module", "smolvlm_cli.cli",
           *train_args(baseline["model"], run)]
    run_together([(cmd, clean_env())], tmp_path / "logs")
    assert "--local_rank=1" in (tmp_path / "logs" / "0.log").read_text()  # the launcher's own log of the command
    assert_same_run(run, baseline)


def _srun_port() -> tuple[str, str]:
    """A job id whose derived port (20000 + id % 20000) is free now."""
    for job in range(int(time.time()) % 20000, 40000):
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 20000 + job % 20000))
            return str(job), str(20000 + job % 20000)
        except OSError:
            continue
    raise RuntimeError("no free port in 20000..39999")


def test_srun_variables_two_nodes_of_two_tasks(tmp_path, baseline):
    """Four processes as `srun --nodes 2 --ntasks-per-node 2` starts them: only Slurm's variables, node 0 found in
    the job's node list (a bracket range that expands to this machine), the port from the job id."""
    run, (job, _) = tmp_path / "run", _srun_port()
    slurm = {"SLURM_NTASKS": "4", "SLURM_JOB_NODELIST": "127.0.0.[1-2]", "SLURM_JOB_ID": job,
             "SLURM_NNODES": "2"}
    jobs = [(smolvlm(*train_args(baseline["model"], run)),
             clean_env(**slurm, SLURM_PROCID=str(r), SLURM_LOCALID=str(r % 2), SLURM_NODEID=str(r // 2)))
            for r in range(4)]
    run_together(jobs, tmp_path / "logs")
    assert_same_run(run, baseline, world=4)


def test_sigterm_stops_every_process_of_a_launch(tmp_path, tiny_model_dir):
    """A scheduler's SIGTERM to `smolvlm` reaches the launcher's whole tree (the DeepSpeed runner alone would die
    and leave its ranks running)."""
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node0 slots=2\n")
    cmd = smolvlm(*train_args(tiny_model_dir, tmp_path / "run"), "--hostfile", str(hostfile), "--no-ssh",
                  "--node-rank", "0", "--master-addr", "127.0.0.1", "--master-port", str(free_port()))
    parent = subprocess.Popen(cmd, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tree: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(tree) < 4:  # runner, launcher, 2 ranks
            time.sleep(0.5)
            tree = psutil.Process(parent.pid).children(recursive=True)
        assert len(tree) >= 4, [p.cmdline() for p in tree]
        parent.send_signal(signal.SIGTERM)
        # the ranks act on it at their next step boundary, which on a loaded machine can be minutes away
        assert parent.wait(timeout=300) == 128 + signal.SIGTERM
        gone, alive = psutil.wait_procs(tree, timeout=120)
        assert not alive, [p.cmdline() for p in alive]
    finally:
        _kill_all([*tree, psutil.Process(parent.pid)] if parent.poll() is None else tree)

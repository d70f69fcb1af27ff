# Process launching and distributed set-up: the train commands' launch options relaunch them under torchrun or the
# DeepSpeed launcher; under any launcher (torchrun, deepspeed, srun) the rank layout is read from the environment.
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

DEFAULT_PORT = 29500  # torchrun's and DeepSpeed's: every node must reach node 0 on the same port without talking
VALUE_OPTIONS = ("--nproc", "--nnodes", "--node-rank", "--master-addr", "--master-port", "--hostfile")
FLAG_OPTIONS = ("--no-ssh",)


class LaunchError(UserError):
    """The launch options or a launcher's environment do not describe a valid set of processes."""


@dataclass
class Launch:
    """The train commands' launch options, as given."""

    nproc: int = 1
    nnodes: int = 1
    node_rank: int | None = None
    master_addr: str | None = None
    master_port: int | None = None
    hostfile: Path | None = None
    no_ssh: bool = False

    @property
    def relaunches(self) -> bool:
        return self.nproc > 1 or self.nnodes > 1 or self.hostfile is not None


@dataclass
class Dist:
    rank: int
    world_size: int
    local_rank: int

    @property
    def main(self) -> bool:
        return self.rank == 0


def under_launcher() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def strip_option(argv: list[str], name: str, flag: bool = False) -> list[str]:
    """argv without `name VALUE` / `name=VALUE` (or the bare `name` of a flag)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = not flag
        elif not arg.startswith(name + "="):
            out.append(arg)
    return out


def strip_launch_options(argv: list[str]) -> list[str]:
    """The command each rank runs: this one without the options that asked for the launch."""
    for name in VALUE_OPTIONS:
        argv = strip_option(argv, name)
    for name in FLAG_OPTIONS:
        argv = strip_option(argv, name, flag=True)
    return argv


def read_hostfile(path: Path) -> dict[str, int]:
    """`HOST slots=N` lines (DeepSpeed's format; # comments) -> {host: slots}, in file order."""
    path = Path(path)
    if not path.is_file():
        raise LaunchError(f"hostfile '{path}' not found", "pass a file of 'HOST slots=N' lines, one a node")
    hosts: dict[str, int] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"(\S+)\s+slots=(\d+)", line)
        if not match or int(match[2]) < 1:
            raise LaunchError(f"hostfile '{path}' line {number} is not 'HOST slots=N' (N >= 1): {line!r}",
                              "write one 'HOST slots=N' line per node, N processes (GPUs) on it")
        if match[1] in hosts:
            raise LaunchError(f"hostfile '{path}' names host '{match[1]}' twice", "give each node one line")
        hosts[match[1]] = int(match[2])
    if not hosts:
        raise LaunchError(f"hostfile '{path}' lists no hosts", "write one 'HOST slots=N' line per node")
    return hosts


def _check_node_rank(launch: Launch, nodes: int, what: str) -> None:
    if launch.node_rank is None or launch.master_addr is None:
        raise LaunchError(f"{what} needs --node-rank and --master-addr",
                          "run the same command on every node with its own --node-rank (0 on the node at "
                          "--master-addr)")
    if not 0 <= launch.node_rank < nodes:
        raise LaunchError(f"--node-rank {launch.node_rank} is not in 0..{nodes - 1} ({nodes} nodes)",
                          "number the nodes from 0")


def check(launch: Launch) -> dict[str, int] | None:
    """Refuse contradictory or incomplete launch options; returns the hostfile's hosts when one is given."""
    if launch.nproc < 1 or launch.nnodes < 1:
        raise LaunchError("--nproc and --nnodes must be at least 1", "--nproc is the processes on each node")
    if launch.hostfile is not None:
        if launch.nproc != 1 or launch.nnodes != 1:
            raise LaunchError("--nproc / --nnodes cannot be combined with --hostfile",
                              "the hostfile's lines are the nodes and each line's slots= its processes")
        hosts = read_hostfile(launch.hostfile)
        if launch.no_ssh:
            _check_node_rank(launch, len(hosts), "--hostfile with --no-ssh")
        elif launch.node_rank is not None:
            raise LaunchError("--node-rank with --hostfile needs --no-ssh",
                              "over ssh the DeepSpeed launcher numbers the nodes itself; drop --node-rank")
        return hosts
    if launch.no_ssh:
        raise LaunchError("--no-ssh needs --hostfile", "pass the hostfile that lists every node")
    if launch.nnodes > 1:
        _check_node_rank(launch, launch.nnodes, f"--nnodes {launch.nnodes}")
    elif launch.node_rank is not None or launch.master_addr is not None or launch.master_port is not None:
        raise LaunchError("--node-rank / --master-addr / --master-port are for multi-node runs",
                          "add --nnodes N (torchrun) or --hostfile FILE (DeepSpeed launcher)")
    return None


def launch_command(launch: Launch, argv: list[str]) -> list[str]:
    """The launcher command that runs `smolvlm <argv>` as the ranks `launch` asks for (argv keeps the rest of the
    options; the launch options are stripped so the ranks do not relaunch themselves)."""
    args = strip_launch_options(argv)
    if launch.hostfile is not None:
        # --no_local_rank: the ranks read LOCAL_RANK from the environment; without it each also gets `--local_rank=N`
        cmd = [sys.executable, "-m", "deepspeed.launcher.runner", f"--hostfile={Path(launch.hostfile).resolve()}",
               "--no_local_rank", f"--master_port={launch.master_port or DEFAULT_PORT}"]
        if launch.master_addr:
            cmd.append(f"--master_addr={launch.master_addr}")
        if launch.no_ssh:
            cmd += ["--no_ssh", f"--node_rank={launch.node_rank}"]
        return [*cmd, "--module", "smolvlm_cli.cli", *args]
    if launch.nnodes > 1:
        where = [f"--nnodes={launch.nnodes}", f"--node_rank={launch.node_rank}",
                 f"--master_addr={launch.master_addr}", f"--master_port={launch.master_port or DEFAULT_PORT}"]
    else:
        where = ["--master_addr=127.0.0.1", f"--master_port={_free_port()}"]
    return [sys.executable, "-m", "torch.distributed.run", *where, f"--nproc_per_node={launch.nproc}",
            "-m", "smolvlm_cli.cli", *args]


def local_processes(launch: Launch, hosts: dict[str, int] | None) -> int:
    """How many ranks this launch starts on this machine (for the CPU thread share)."""
    if hosts is None:
        return launch.nproc
    if launch.no_ssh:
        return list(hosts.values())[launch.node_rank]
    return max(hosts.values())  # over ssh the environment does not travel; the value is not used there


def relaunch(launch: Launch) -> int:
    """Run this same command as the processes `launch` asks for; returns the launcher's exit code."""
    hosts = check(launch)
    if under_launcher():
        raise LaunchError("launch options (--nproc, --nnodes, --hostfile) were given to a process a launcher "
                          "started (RANK is set)", "drop them, or start smolvlm without the outer launcher")
    if hosts is not None and not launch.no_ssh and shutil.which("pdsh") is None:
        raise LaunchError("--hostfile starts the nodes over ssh with pdsh, which is not installed",
                          "install pdsh, or run on each node: --hostfile FILE --no-ssh --node-rank R "
                          "--master-addr NODE0")
    cmd = launch_command(launch, sys.argv[1:])
    env = dict(os.environ)
    share = (os.cpu_count() or 1) // local_processes(launch, hosts)
    env.setdefault("OMP_NUM_THREADS", str(max(1, share)))
    import tempfile

    from ..errors import ERROR_FILE_ENV, recorded_error

    # the ranks leave an error here (errors.hand_off) and exit quietly: this process prints it once, without the
    # launcher's report of failed ranks
    with tempfile.TemporaryDirectory(prefix="smolvlm-launch-") as tmp:
        env[ERROR_FILE_ENV] = str(Path(tmp) / "error.json")
        code = _run_forwarding_signals(cmd, env)
        error = recorded_error(env[ERROR_FILE_ENV])
    if error is not None:
        raise error
    return code


def _run_forwarding_signals(cmd: list[str], env: dict) -> int:
    """Run the launcher and wait for it. A SIGTERM or SIGUSR1 to this process (a scheduler, `kill`) goes to the
    ranks, which agree on it at the next step boundary and stop together after a checkpoint: the launchers would
    kill them 30 s after a signal of their own. Before any rank runs it goes to the launcher's whole tree: the
    DeepSpeed runner dies of it without stopping its launcher, and torchrun's ranks sit in sessions of their own.
    Ctrl-C reaches the launchers from the terminal: wait for them to stop their ranks."""
    import psutil

    child = subprocess.Popen(cmd, env=env)
    received = []

    def is_rank(process) -> bool:
        # a launcher gave it RANK; its own children (data workers, compilers) inherit RANK and must not be
        # signalled: a data worker dying of it fails its rank
        try:
            return "RANK" in process.environ() and "RANK" not in process.parent().environ()
        except psutil.Error:
            return False

    def forward(signum, frame):
        received.append(signum)
        try:
            tree = [psutil.Process(child.pid), *psutil.Process(child.pid).children(recursive=True)]
        except psutil.Error:
            return
        for process in [p for p in tree if is_rank(p)] or tree:
            try:
                process.send_signal(signum)
            except psutil.Error:
                pass

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        while True:
            try:
                code = child.wait()
                break
            except KeyboardInterrupt:
                continue
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    code = code if code >= 0 else 128 - code  # killed by a signal: the shell's convention
    # a launch that failed after a stop signal (ranks killed before they could agree) ends as that signal would
    return 128 + received[0] if received and code != 0 else code


def expand_nodelist(text: str) -> list[str]:
    """A Slurm hostlist without scontrol: `gpu[01-03,07]` -> gpu01 gpu02 gpu03 gpu07, `a1,b[2-3]` -> a1 b2 b3,
    zero padding kept; several bracket groups in one name expand as a product (`r[1-2]n[1-2]`)."""
    hosts: list[str] = []
    depth, start = 0, 0
    for i, ch in enumerate(text + ","):
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if depth not in (0, 1):
            break
        if ch == "," and depth == 0:
            if i > start:
                hosts += _expand_name(text[start:i], text)
            start = i + 1
    if depth != 0 or not hosts:
        raise LaunchError(f"cannot read the Slurm node list '{text}'", "set MASTER_ADDR to the first node's address")
    return hosts


def _expand_name(name: str, text: str) -> list[str]:
    match = re.fullmatch(r"([^\[\]]*)\[([^\[\]]+)\](.*)", name)
    if match is None:
        if "[" in name or "]" in name:
            raise LaunchError(f"cannot read the Slurm node list '{text}'", "set MASTER_ADDR to the first node")
        return [name]
    head, ranges, tail = match.groups()
    numbers = []
    for part in ranges.split(","):
        low, _, high = part.partition("-")
        if not low.isdigit() or not (high or low).isdigit() or int(high or low) < int(low):
            raise LaunchError(f"cannot read the range '[{ranges}]' in the Slurm node list '{text}'",
                              "set MASTER_ADDR to the first node's address")
        numbers += [str(n).zfill(len(low)) for n in range(int(low), int(high or low) + 1)]
    return [head + n + rest for n in numbers for rest in (_expand_name(tail, text) if tail else [""])]


def slurm_env(env: dict[str, str]) -> dict[str, str]:
    """The torch.distributed variables for a process `srun` started (one task per GPU) and no other launcher:
    rank and sizes from Slurm's, node 0 = the first host of the job, port from the job id unless given."""
    if "RANK" in env or "SLURM_PROCID" not in env:
        return {}
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if "SLURM_NTASKS" not in env or (nodelist is None and "MASTER_ADDR" not in env):
        raise LaunchError("SLURM_PROCID is set but SLURM_NTASKS or SLURM_JOB_NODELIST is not",
                          "start the ranks with srun inside an sbatch / salloc allocation")
    out = {"RANK": env["SLURM_PROCID"], "WORLD_SIZE": env["SLURM_NTASKS"], "LOCAL_RANK": env.get("SLURM_LOCALID", "0")}
    if "MASTER_ADDR" not in env:
        out["MASTER_ADDR"] = expand_nodelist(nodelist)[0]
    if "MASTER_PORT" not in env:
        # the same on every node with no exchange, and different for two jobs sharing a first node
        out["MASTER_PORT"] = str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000)
    return out


def barrier() -> None:
    """Wait for every rank (a no-op in a single process without a process group)."""
    import torch

    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def init_distributed() -> Dist:
    """Set up torch.distributed (NCCL on GPU, gloo on CPU) for 1..N processes."""
    import deepspeed
    import torch

    os.environ.update(slurm_env(dict(os.environ)))
    if not under_launcher():
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        deepspeed.init_distributed(dist_backend=backend, verbose=False)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        # modulo: srun with --gpus-per-task shows each task only its own GPU, as device 0
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    return Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), local_rank)

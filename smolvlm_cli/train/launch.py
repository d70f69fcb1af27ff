# Process launching and distributed set-up: `--nproc N` relaunches this command under torchrun; under a launcher
# that sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT (torchrun) the environment is read as is.
from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass


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


def strip_option(argv: list[str], name: str) -> list[str]:
    """argv without `name VALUE` / `name=VALUE`."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            out.append(arg)
    return out


def relaunch(nproc: int) -> int:
    """Run this same command on N local processes (torchrun)."""
    args = strip_option(sys.argv[1:], "--nproc")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "smolvlm_cli.cli", *args]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(nproc, 1))))
    return subprocess.call(cmd, env=env)


def barrier() -> None:
    """Wait for every rank (a no-op in a single process without a process group)."""
    import torch

    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def init_distributed() -> Dist:
    """Set up torch.distributed (NCCL on GPU, gloo on CPU) for 1..N processes."""
    import deepspeed
    import torch

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
        torch.cuda.set_device(local_rank)
    return Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), local_rank)

# Start-up time of `smolvlm --help` and of every subcommand's `--help` (target: under 150 ms each), and the heavy
# modules each one imports (none: a command's help must not import what only running it needs).
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

EXE = Path(sys.executable).with_name("smolvlm")
HEAVY = ("torch", "transformers", "deepspeed", "datasets", "peft", "numpy", "PIL", "av", "pydantic", "yaml",
         "huggingface_hub")


def command_paths() -> list[list[str]]:
    """[] for the app, then every command and sub-command, e.g. ["data", "cache"]."""
    import typer

    from smolvlm_cli.cli import app

    def walk(group, prefix):
        for name, cmd in sorted(getattr(group, "commands", {}).items()):
            yield [*prefix, name]
            yield from walk(cmd, [*prefix, name])

    return [[], *walk(typer.main.get_command(app), [])]


def timed(args: list[str], repeats: int = 7) -> float:
    subprocess.run([str(EXE), *args], capture_output=True, check=True)  # warm the page cache
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([str(EXE), *args], capture_output=True, check=True)
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def heavy_imports(args: list[str]) -> list[str]:
    code = ("import sys\nfrom smolvlm_cli.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            f"print('HEAVY:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("HEAVY:"))
    return [m for m in line.removeprefix("HEAVY:").split(",") if m]


if __name__ == "__main__":
    times = []
    for path in command_paths():
        args = [*path, "--help"]
        times.append(timed(args))
        print(f"smolvlm {' '.join(args):<22} median {times[-1] * 1000:4.0f} ms   heavy imports: "
              f"{heavy_imports(args) or 'none'}")
    print(f"slowest {max(times) * 1000:.0f} ms, fastest {min(times) * 1000:.0f} ms (median of 7 runs each)")

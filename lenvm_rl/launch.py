"""Run a `lenvm` subcommand under `accelerate launch` when its recipe asks for it, as `trl` does.

Recipe keys ``accelerate_config: zero3`` (a file, ``recipes/accelerate_configs/<name>.yaml``, or a config
name shipped with TRL) and ``num_processes: 8`` are not training fields: the parser leaves them over, and
we re-execute the same command through ``accelerate launch`` with them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

LAUNCH_KEYS = ("--accelerate_config", "--num_processes")
LAUNCHED_ENV = "LENVM_LAUNCHED"


def split_launch_args(remaining: list[str]) -> tuple[dict[str, str], list[str]]:
    """Separate ``--accelerate_config X`` / ``--num_processes N`` from anything else left unparsed."""
    launch, other, i = {}, [], 0
    while i < len(remaining):
        key = remaining[i].split("=", 1)[0]
        if key in LAUNCH_KEYS:
            value = remaining[i].split("=", 1)[1] if "=" in remaining[i] else remaining[i + 1]
            launch[key.lstrip("-")] = value
            i += 1 if "=" in remaining[i] else 2
        else:
            other.append(remaining[i])
            i += 1
    return launch, other


def resolve_accelerate_config(name: str) -> str:
    for candidate in (Path(name), Path("recipes/accelerate_configs") / f"{name}.yaml"):
        if candidate.is_file():
            return str(candidate)
    shipped = resources.files("trl.accelerate_configs").joinpath(f"{name}.yaml")
    if shipped.is_file():
        return str(shipped)
    raise ValueError(
        f"accelerate_config {name!r} is neither a file, nor recipes/accelerate_configs/{name}.yaml, "
        "nor a config shipped with TRL (zero1, zero2, zero3, fsdp1, fsdp2, multi_gpu, single_gpu)."
    )


def already_launched() -> bool:
    return LAUNCHED_ENV in os.environ or "LOCAL_RANK" in os.environ


def relaunch(subcommand: str, argv: list[str], launch: dict[str, str]) -> int:
    """Re-run ``lenvm <subcommand> <argv>`` under ``accelerate launch`` with the recipe's launcher settings."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if "accelerate_config" in launch:
        cmd += ["--config_file", resolve_accelerate_config(launch["accelerate_config"])]
    if "num_processes" in launch:
        cmd += ["--num_processes", str(launch["num_processes"])]
    cmd += ["-m", "lenvm_rl.cli", subcommand, *argv]
    print("[lenvm] launching:", " ".join(cmd), flush=True)
    return subprocess.call(cmd, env={**os.environ, LAUNCHED_ENV: "1"})

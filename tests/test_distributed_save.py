"""The distributed save path: two CPU processes train a tiny random LenVM under `accelerate launch` with the
repository's FSDP config, save it with ``trainer.save_model`` and the test reloads it in one process; its values
match those of the weights the processes held after training (gathered by accelerate, loaded in one process).

On CPU, accelerate (1.16) runs that config as DDP with gloo (``DistributedType.MULTI_CPU``), not FSDP: its
``AcceleratorState`` turns FSDP on only for accelerator devices (MULTI_GPU, MULTI_XPU, ...), and a CPU run takes
the MULTI_CPU branch first, silently. (torch's FSDP2 itself runs on CPU with gloo; accelerate does not route to it.)
The launcher's ``--cpu`` flag is worse: every process then trains alone (``DistributedType.NO``). The test names
the distributed type it got, so a two-process run it did not get fails it.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest
import torch

from lenvm_rl.modeling import LengthValueModel
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def init_dir(tmp_path, tiny_backbone, tokenizer):
    path = tmp_path / "init"
    LengthValueModel(tiny_backbone, gamma=0.9).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_two_process_save_reloads_the_trained_weights(init_dir, tmp_path):
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO / "recipes" / "accelerate_configs" / "fsdp.yaml"),
        "--num_processes",
        "2",
        "--mixed_precision",
        "no",
        "--main_process_port",
        str(free_port()),
        str(REPO / "tests" / "dist_save_helper.py"),
        str(init_dir),
        str(out),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ran = re.search(r"\[helper\] distributed: DistributedType\.(\w+) processes: (\d+)", proc.stdout)
    assert ran and ran[1] in ("MULTI_CPU", "FSDP") and ran[2] == "2", proc.stdout[-2000:]

    trained = torch.load(out / "trained.pt")
    reference = LengthValueModel.from_pretrained(init_dir)
    start = {k: v.clone() for k, v in reference.state_dict().items()}
    reference.load_state_dict(trained, strict=True)  # the gathered weights, in one process
    assert any(not torch.equal(start[k], trained[k]) for k in trained)  # it trained
    assert not torch.equal(start["v_head.fc.weight"], trained["v_head.fc.weight"])

    saved = LengthValueModel.from_pretrained(out / "ckpt")
    assert saved.gamma == reference.gamma
    ids = torch.randint(5, 1000, (3, 17), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # a left-padded row
    with torch.no_grad():
        torch.testing.assert_close(saved(ids, mask).value, reference(ids, mask).value, rtol=0, atol=1e-6)

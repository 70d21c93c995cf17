"""Shared fixtures: the embedded default's tokenizer (converted once per machine), tiny random models."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, LlamaModel

from lenvm_rl.defaults import default_model_path

REPO = Path(__file__).resolve().parents[1]
# Third-party data (LIFEBench, GSM8K) beside the repo, as CI has it; a user's fresh clone may not. Tests use the
# small fixtures below; checks on the real files skip without them. LENVM_SHARED_DATA points elsewhere (e.g. at a
# missing folder, to check that everything passes without the data).
SHARED_DATA = Path(os.environ.get("LENVM_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_data_file(*parts: str) -> Path:
    """A file of the shared data folder, or skip the calling test (with the reason) when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"real-data check: {path} is not present (the third-party data folder is not beside the repo)")
    return path


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """The plain checkpoint of the embedded default (converted from GGUF on first use, then cached)."""
    return default_model_path()


@pytest.fixture(scope="session")
def tokenizer(default_model_dir):
    return AutoTokenizer.from_pretrained(default_model_dir)


def tiny_config(vocab_size: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=2,
        bos_token_id=1,
        eos_token_id=2,
    )


@pytest.fixture
def tiny_backbone(tokenizer):
    torch.manual_seed(0)
    return LlamaModel(tiny_config(len(tokenizer)))


@pytest.fixture(scope="session")
def tiny_causal_dir(tmp_path_factory, tokenizer) -> Path:
    """A tiny random causal LM saved with the default's tokenizer: a stand-in generator and backbone."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-causal")
    model = LlamaForCausalLM(tiny_config(len(tokenizer)))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    # A random model almost never samples EOS out of 49k tokens; allow only 15 words and EOS, so completions
    # end after ~16 tokens on average, like a (very dull) chat model.
    allowed = set(range(1000, 1015)) | {tokenizer.eos_token_id}
    model.generation_config.suppress_tokens = [i for i in range(len(tokenizer)) if i not in allowed]
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_records(tokenizer, n: int = 24, seed: int = 0, truncated_every: int = 0, max_len: int = 40) -> list[dict]:
    """Synthetic rollout records with varied lengths (the EOS ends finished completions)."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        length = rng.randint(1, max_len)
        body = [rng.randint(300, 5000) for _ in range(length - 1)]
        finished = not (truncated_every and i % truncated_every == 0)
        ids = body + [tokenizer.eos_token_id] if finished else body + [rng.randint(300, 5000)]
        text = tokenizer.decode(body if finished else ids, skip_special_tokens=True)
        records.append(
            {
                "prompt_id": f"p{i % 6}",
                "prompt": [{"role": "user", "content": f"Question number {i % 6}?"}],
                "completion": text,
                "completion_ids": ids,
                "finish_reason": "stop" if finished else "length",
                "num_tokens": len(ids),
                "sample_index": i // 6,
                "generator": "synthetic",
                "sampling": {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": max_len, "seed": seed},
            }
        )
    return records


def summary_cell(mode, arm, target, ls, natural, gap=0.05, degenerate=0.0, repetitive=0.0) -> dict:
    """A LIFEBench cell summary with the figures the goal and the experiments read."""
    return {
        "mode": mode,
        "arm": arm,
        "target": target,
        "ls": ls,
        "natural_end_rate": natural,
        "nll_gap_to_plain": gap,
        "degenerate_rate": degenerate,
        "repetitive_rate": repetitive,
    }


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="session")
def lifebench_file(tmp_path_factory) -> Path:
    """A few hand-written rows in LIFEBench's format (tests/fixture_data.py): en and cn, three categories."""
    from fixture_data import lifebench_rows, write_rows

    return write_rows(tmp_path_factory.mktemp("lifebench") / "data_lite_no_summary.jsonl", lifebench_rows())


@pytest.fixture(scope="session")
def gsm8k_file(tmp_path_factory) -> Path:
    """A few hand-written rows in GSM8K's format, as ``gsm8k/test.jsonl``."""
    from fixture_data import gsm8k_rows, write_rows

    return write_rows(tmp_path_factory.mktemp("gsm8k") / "test.jsonl", gsm8k_rows())


def pytest_collection_modifyitems(config, items):
    """An integration test (a run on the embedded default model) is a slow one: `-m "not slow"` leaves it out."""
    for item in items:
        if item.get_closest_marker("integration") and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)

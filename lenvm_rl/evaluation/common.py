"""What every evaluation shares: its command-line basics, model loading, plain sampling and its outputs."""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..generation import (  # noqa: F401  (shared with `lenvm generate` and `lenvm demo`; their home before)
    DEFAULT_CRITIC,
    REPEAT_N,
    answer_nll,
    answers_nll,
    guided,
    load_critic,
    load_generator,
    repeated_ngram_share,
    setup_threads,
)


@dataclass
class EvalArguments:
    """The options every `lenvm eval NAME` takes; each evaluation's dataclass adds its own fields."""

    critic: str = field(
        default=DEFAULT_CRITIC,
        metadata={"help": "LenVM checkpoint (default: the quickstart's; run `lenvm quickstart`)."},
    )
    generator: str | None = field(
        default=None, metadata={"help": "Generator: hub id or path (default: the embedded SmolLM2-135M)."}
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "Where NAME.json / .png / .md go (default: lenvm_runs/eval/NAME)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed for sampling and fitting."})
    batch_size: int = field(default=16, metadata={"help": "Rows per generate call."})
    tiny: bool = field(default=False, metadata={"help": "A seconds-long run with CI-sized settings."})


def parse_args(args_type: type, name: str, description: str, argv=None):
    """``args_type`` (an :class:`EvalArguments` subclass) from ``argv`` with TRL's parser (``--config`` YAML too)."""
    from ..args import make_parser, parse

    (args,) = parse(make_parser([args_type], f"lenvm eval {name}", description), argv)
    args.output_dir = args.output_dir or f"lenvm_runs/eval/{name}"
    return args


def command_line(name: str, argv) -> str:
    return " ".join(["lenvm eval", name, *(argv if argv is not None else sys.argv[1:])])


def critic_training_prompts(critic_path: str) -> set[str]:
    """Prompt texts the critic was trained on, when its rollouts sit beside it (the quickstart layout)."""
    from ..data import prompt_messages

    texts = set()
    rollouts = Path(critic_path).parent / "rollouts_train.jsonl"
    if rollouts.is_file():
        with open(rollouts) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                texts.add(prompt_messages(rec["prompt"])[-1]["content"])
    return texts


def length_groups(lengths: list[int], batch_size: int, max_batch_tokens: int) -> list[tuple[int, int]]:
    """Contiguous ``(start, end)`` slices of rows sorted by prompt length: at most ``batch_size`` rows and at most
    ``max_batch_tokens`` padded prompt tokens (rows x the longest) each, a longer row alone. A padded batch pays its
    longest prompt in every row, so one 1,500-token prompt among 60-token ones costs the whole batch 25x."""
    if any(b < a for a, b in zip(lengths, lengths[1:])):
        raise ValueError("length_groups needs rows sorted by length")
    groups, start = [], 0
    for i in range(1, len(lengths) + 1):
        if i == len(lengths) or i - start >= batch_size or (i - start + 1) * lengths[i] > max_batch_tokens:
            groups.append((start, i))
            start = i
    return groups


@torch.no_grad()
def sample_plain(
    model,
    tokenizer,
    prompts,
    max_new_tokens: int,
    batch_size: int = 16,
    do_sample: bool = True,
    temperature: float = 0.7,
    top_p: float = 0.9,
    seed: int = 0,
    desc: str = "generating",
    use_chat_template: bool = True,
) -> list[dict]:
    """Plain generation, one dict per prompt like ``generate_with_length``: text, token_ids, num_tokens, end,
    finished, and ``p_eos`` (the generator's probability of EOS where the row ended, at ``temperature``; the
    reference beside which a guided arm's ends are read, see :mod:`lenvm_rl.ends`). Pass the critic's
    ``use_chat_template`` so both arms see the same prompts."""
    from tqdm.auto import tqdm

    from ..data import encode_prompt
    from ..decoding import completion_record
    from ..ends import EosProbabilityRecorder, eos_token_ids

    torch.manual_seed(seed)
    out = []
    for start in tqdm(range(0, len(prompts), batch_size), desc=desc, leave=False):
        inputs = [encode_prompt(tokenizer, p, use_chat_template) for p in prompts[start : start + batch_size]]
        recorder = EosProbabilityRecorder(eos_token_ids(tokenizer, model), temperature if do_sample else 1.0)
        rows = continue_ids(model, tokenizer, inputs, max_new_tokens, do_sample, temperature, top_p, [recorder])
        out += [completion_record(row, tokenizer, p_eos=p) for row, p in zip(rows, recorder.p_eos())]
    return out


@torch.no_grad()
def continue_ids(
    model,
    tokenizer,
    inputs: list[list[int]],
    max_new_tokens: int,
    do_sample=True,
    temperature=0.7,
    top_p=0.9,
    logits_processor: list | None = None,
) -> list[list[int]]:
    """One ``generate`` call over token-id rows (left-padded): each row's new ids, padding after EOS included.
    ``logits_processor`` runs before ``generate``'s temperature and top-p (e.g. an ``EosProbabilityRecorder``)."""
    from ..critic import left_pad

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    ids, mask = left_pad(inputs, pad)
    gen = model.generate(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        temperature=temperature if do_sample else None,
        top_p=top_p if do_sample else None,
        top_k=0 if do_sample else None,
        pad_token_id=pad,
        eos_token_id=tokenizer.eos_token_id,
        logits_processor=logits_processor,
    )
    return gen[:, ids.shape[1] :].tolist()


def take_in_turn(queues: list[list], n: int) -> list:
    """Up to ``n`` items, one from the front of each queue in turn: every group is as evenly represented as its size
    allows (a seeded shuffle of each group first gives a stratified draw)."""
    queues = [list(q) for q in queues]
    picked = []
    while len(picked) < n and any(queues):
        for q in queues:
            if q and len(picked) < n:
                picked.append(q.pop(0))
    return picked


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}, {cores} cores (CPU)"


def write_outputs(out_dir: str | os.PathLike, name: str, result: dict, markdown: str) -> dict:
    """``NAME.json`` (with the command and machine) and ``NAME.md``; the figure is written by the caller."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = {"eval": name, "machine": machine(), "torch": torch.__version__, **result}
    (out / f"{name}.json").write_text(json.dumps(result, indent=2, default=float))
    header = f"<!-- {result.get('command', '')} | {result['machine']} -->\n"
    (out / f"{name}.md").write_text(header + markdown)
    print("\n" + markdown + f"\n[lenvm eval] wrote {out / name}.json / .md / .png")
    return result


def heldout_examples(
    critic_path: str, rollouts: str | None, tokenizer, limit: int | None = None, use_chat_template: bool = True
) -> tuple[list, str]:
    """Finished completions as examples (``input_ids``, ``labels`` = tokens to come, ``prompt_len``), prompts
    encoded as the critic was trained (pass its ``use_chat_template``).

    Default source: the quickstart's held-out rollouts beside the critic (prompts it never trained on).
    """
    from ..data import build_examples, load_rollouts

    path = Path(rollouts) if rollouts else Path(critic_path).parent / "rollouts_heldout.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: pass --rollouts FILE (a `lenvm rollouts` JSONL of prompts the critic never trained on)."
        )
    records = load_rollouts(path)[:limit] if limit else load_rollouts(path)
    examples, _ = build_examples(records, tokenizer, use_chat_template=use_chat_template, truncated="drop")
    for ex in examples:
        ex["prompt_len"] = next(i for i, label in enumerate(ex["labels"]) if label >= 0) + 1
    return examples, str(path)


def right_pad(examples: list[dict], pad_id: int):
    from ..data import LengthValueCollator

    batch = LengthValueCollator(pad_id)([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples])
    return (
        batch["input_ids"],
        batch["attention_mask"],
        batch["labels"],
        torch.tensor([e["prompt_len"] for e in examples]),
    )

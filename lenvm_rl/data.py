"""Rollout records -> tokenized value-training examples.

An example holds ``input_ids`` (prompt rendered with the LenVM tokenizer's chat template, then the
completion ending in EOS) and ``labels``: the number of tokens still to come, EOS included, at every
trained position (the last prompt token through the EOS token), -100 elsewhere. Labels are counts, not
values, so examples do not depend on gamma; the trainer turns them into targets with ``returns``.
Using ``labels`` with -100 also lets ``Trainer`` count trained tokens across accumulation steps and
processes for the token-mean loss.

Truncated completions (cut at ``max_new_tokens``, no EOS) are not terminal, but they say something: at a
state with ``k`` generated tokens after it, at least ``k + 1`` tokens were still to come (those ``k`` and the
EOS that had not come yet). With ``truncated="censor"`` (the default) such a completion is kept as a
*censored* example: its ``labels`` are all -100 (it has no exact target, so every consumer of ``labels``,
evaluation metrics included, skips it) and ``lower_bounds`` holds ``k + 1`` at its trained positions; the
trainer turns these into the one-sided constraint ``V_t <= -(1 - gamma ** (k + 1))``. Dropping them
(``truncated="drop"``) censors the long tail away and biases every target toward shorter lengths. Examples
built with ``"censor"`` carry ``lower_bounds`` (-100 where there is none) and ``censored``.

Sequences longer than ``max_length`` lose prompt tokens from the left first, then completion tokens from the
right; either way each kept position keeps its true remaining count (or bound), so no target is corrupted.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .prompts import ChatTemplateError, encode_prompt, prompt_messages  # noqa: F401  (their home before)

IGNORE_INDEX = -100
REQUIRED_FIELDS = ("prompt_id", "prompt", "completion", "completion_ids", "finish_reason")
TRUNCATION_WARN_SHARE = 0.05
TRUNCATED_MODES = ("censor", "drop")

logger = logging.getLogger(__name__)


@dataclass
class BuildStats:
    """What happened to the records while building examples; printed by the CLI."""

    records: int = 0
    examples: int = 0
    dropped_truncated: int = 0
    censored: int = 0  # truncated completions kept as censored examples (lower bounds)
    prompts_cut: int = 0
    completions_cut: int = 0
    retokenized: int = 0

    @property
    def truncated_share(self) -> float:
        """Share of the rollouts that were truncated, whether dropped or kept as censored."""
        return (self.dropped_truncated + self.censored) / max(self.records, 1)

    def summary(self) -> str:
        s = f"{self.examples} examples from {self.records} rollouts; "
        if self.censored:
            s += (
                f"kept {self.censored} truncated as censored (lower bounds, {100 * self.truncated_share:.1f}%), "
                f"{self.examples - self.censored} finished"
            )
        else:
            s += f"dropped {self.dropped_truncated} truncated ({100 * self.truncated_share:.1f}%)"
        if self.prompts_cut or self.completions_cut:
            s += f"; cut to max_length: {self.prompts_cut} prompts (left), {self.completions_cut} completions (right)"
        return s


def load_rollouts(path: str | os.PathLike) -> list[dict]:
    """Read a rollouts JSONL file, checking every record; errors name the line and what to do."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"rollouts file {path} does not exist; create it with `lenvm rollouts`.")
    records = []
    with path.open() as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(
                    f"{path}:{lineno} is not valid JSON ({e}); an interrupted write leaves at most the "
                    "last line broken: delete that line and re-run `lenvm rollouts` to resume."
                ) from None
            validate_record(rec, f"{path}:{lineno}")
            records.append(rec)
    if not records:
        raise ValueError(f"{path} holds no rollout records; sample some with `lenvm rollouts`.")
    return records


def validate_record(rec: dict, where: str = "record") -> None:
    missing = [k for k in REQUIRED_FIELDS if k not in rec]
    if missing:
        raise ValueError(
            f"{where} lacks the fields {missing}; a rollout record needs {list(REQUIRED_FIELDS)} "
            "(see lenvm_rl.rollouts for the schema)."
        )
    if rec["finish_reason"] not in ("stop", "length"):
        raise ValueError(f"{where}: finish_reason must be 'stop' or 'length', got {rec['finish_reason']!r}")
    if not rec["completion_ids"]:
        raise ValueError(
            f"{where} has an empty completion (no tokens, not even EOS). A finished completion ends "
            "with its EOS token; regenerate this prompt's rollouts or delete the line."
        )


def completion_ids_for(tokenizer, rec: dict, stats: BuildStats | None = None) -> list[int]:
    """The completion in the LenVM tokenizer, ending with its EOS for finished completions.

    The generator's ids are reused when they decode to the same text with this tokenizer (same vocabulary);
    otherwise the text is re-tokenized, so a LenVM can learn from another generator's rollouts.
    """
    ids = list(rec["completion_ids"])
    eos = tokenizer.eos_token_id
    finished = rec["finish_reason"] == "stop"
    body = ids[:-1] if finished else ids
    same_vocab = (
        all(0 <= i < len(tokenizer) for i in body)
        and tokenizer.decode(body, skip_special_tokens=True) == rec["completion"]
    )
    if not same_vocab:
        body = tokenizer(rec["completion"], add_special_tokens=False)["input_ids"]
        if stats is not None:
            stats.retokenized += 1
    return body + [eos] if finished else body


def build_example(
    prompt_ids: Sequence[int],
    completion_ids: Sequence[int],
    max_length: int | None,
    stats: BuildStats | None = None,
    censored: bool = False,
    min_prompt_keep: int = 0,
) -> dict:
    """One example from a finished completion (its last token is EOS); see the module docstring for cuts.

    ``censored=True``: the completion was cut without EOS. Its ``labels`` are all -100 and ``lower_bounds``
    holds, at state ``s_t`` (t = 0 .. k, k generated tokens), ``k - t + 1``: the tokens seen after it plus the
    EOS still to come, a lower bound on the true remaining count.

    ``min_prompt_keep``: prompt tokens a cut from the left must keep (a VLM prompt's image tokens and all after
    them: the images' pixels go with every image token)."""
    p, length = len(prompt_ids), len(completion_ids)
    if p < 1:
        raise ValueError("a prompt needs at least one token: the state s_0 sits on the last prompt token")
    keep_prompt, keep_completion = p, length
    if max_length is not None and p + length > max_length:
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {max_length}")
        # Keep at least a quarter of the window for the prompt, so the state keeps some context.
        if min_prompt_keep > max_length:
            raise ValueError(
                f"The prompt's image tokens and the text after them take {min_prompt_keep} tokens, more "
                f"than max_length={max_length}; raise max_length or lower the image resolution "
                "(the processor's max_pixels / size)."
            )
        keep_prompt = min(p, max(max_length - length, max_length // 4, 1, min_prompt_keep))
        keep_completion = min(length, max_length - keep_prompt)
        if stats is not None:
            stats.prompts_cut += keep_prompt < p
            stats.completions_cut += keep_completion < length
    input_ids = list(prompt_ids[p - keep_prompt :]) + list(completion_ids[:keep_completion])
    labels = [IGNORE_INDEX] * len(input_ids)
    # Position keep_prompt - 1 + t holds state s_t, with L - t tokens to come (t = 0 .. keep_completion); for a
    # censored completion at least L - t + 1 (the EOS has not come yet).
    for t in range(min(keep_completion, length) + 1):
        if keep_prompt - 1 + t < len(input_ids):
            labels[keep_prompt - 1 + t] = length - t + censored
    if censored:
        return {
            "input_ids": input_ids,
            "labels": [IGNORE_INDEX] * len(input_ids),
            "lower_bounds": labels,
            "completion_length": length,
            "censored": True,
        }
    return {"input_ids": input_ids, "labels": labels, "completion_length": length}


def build_examples(
    records: Iterable[dict],
    tokenizer,
    max_length: int | None = None,
    use_chat_template: bool = True,
    truncated: str = "censor",
) -> tuple[list[dict], BuildStats]:
    """Turn rollout records into examples. Truncated completions are kept as censored examples
    (``truncated="censor"``, the default) or dropped (``"drop"``); either way they are counted in the stats.
    Ground-truth consumers (evaluation) may pass ``"drop"``; censored rows carry no ``labels`` anyway."""
    if truncated not in TRUNCATED_MODES:
        raise ValueError(f"truncated must be one of {TRUNCATED_MODES}, got {truncated!r}")
    censor = truncated == "censor"
    from .vlm import encode_vlm_prompt, image_key, image_span_start, is_processor, record_images

    processor = tokenizer if is_processor(tokenizer) else None  # a VLM's processor: records may carry images
    tokenizer = processor.tokenizer if processor is not None else tokenizer
    stats = BuildStats()
    examples, prompt_cache = [], {}
    for rec in records:
        stats.records += 1
        cut = rec["finish_reason"] != "stop"
        if cut and not censor:
            stats.dropped_truncated += 1
            continue
        images = record_images(rec)
        if images and processor is None:
            from .vlm import VisionInputError

            raise VisionInputError(
                f"Record {rec['prompt_id']!r} carries images but a text tokenizer was given; pass "
                "the VLM's processor (AutoProcessor) to build examples with images."
            )
        key = json.dumps([rec["prompt"], [image_key(x) for x in images]], sort_keys=True)
        if key not in prompt_cache:
            prompt_cache[key] = (
                encode_prompt(tokenizer, rec["prompt"], use_chat_template)
                if processor is None
                else encode_vlm_prompt(processor, rec["prompt"], images, use_chat_template)
            )
        prompt_ids = prompt_cache[key]
        first_image = image_span_start(prompt_ids, processor) if images else None
        ex = build_example(
            prompt_ids,
            completion_ids_for(tokenizer, rec, stats),
            max_length,
            stats,
            censored=cut,
            min_prompt_keep=0 if first_image is None else len(prompt_ids) - first_image,
        )
        if processor is not None:
            ex["images"] = images
        if censor and not cut:
            ex.update(lower_bounds=[IGNORE_INDEX] * len(ex["input_ids"]), censored=False)
        stats.censored += cut
        ex["prompt_id"] = str(rec["prompt_id"])
        examples.append(ex)
    stats.examples = len(examples)
    if stats.records and stats.examples == stats.censored:
        raise ValueError(
            f"All {stats.records} completions were truncated (finish_reason='length'), so none is a terminal state "
            "to learn from. Re-sample with a larger --max-new-tokens or prompts with shorter answers."
        )
    if stats.truncated_share > TRUNCATION_WARN_SHARE:
        if censor:
            logger.warning(
                "%.1f%% of the completions were truncated; they are kept as censored examples (only a lower bound "
                "on their length), so the long tail is learnt from bounds alone: raise --max-new-tokens for exact "
                "targets.",
                100 * stats.truncated_share,
            )
        else:
            logger.warning(
                "%.1f%% of the completions were truncated and dropped. Dropping censors the long tail and biases "
                "every target toward shorter lengths: keep them (truncated='censor'), raise --max-new-tokens or use "
                "prompts with shorter answers.",
                100 * stats.truncated_share,
            )
    return examples, stats


def build_dataset(
    records: Iterable[dict],
    tokenizer,
    max_length: int | None = None,
    use_chat_template: bool = True,
    truncated: str = "censor",
):
    """``datasets.Dataset`` version of :func:`build_examples`; returns ``(dataset, stats)``."""
    from datasets import Dataset

    examples, stats = build_examples(records, tokenizer, max_length, use_chat_template, truncated)
    return Dataset.from_list(examples), stats


def completion_lengths(dataset, include_censored: bool = True) -> list[int]:
    """Completion lengths (a censored completion counts with its generated length, a lower bound)."""
    lengths = [int(x) for x in dataset["completion_length"]]
    if include_censored or "censored" not in dataset.column_names:
        return lengths
    return [n for n, c in zip(lengths, dataset["censored"]) if not c]


def split_by_prompt(records: Sequence[dict], eval_share: float, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Hold out whole prompts (never single samples), so evaluation is on unseen prompts."""
    ids = sorted({str(r["prompt_id"]) for r in records})
    g = torch.Generator().manual_seed(seed)
    order = [ids[i] for i in torch.randperm(len(ids), generator=g).tolist()]
    n_eval = max(1, round(eval_share * len(ids))) if eval_share > 0 else 0
    held = set(order[:n_eval])
    return [r for r in records if str(r["prompt_id"]) not in held], [r for r in records if str(r["prompt_id"]) in held]


@dataclass
class LengthValueCollator:
    """Right-pads ``input_ids`` (pad id), ``attention_mask`` (0), ``labels`` and, when the features carry them,
    ``lower_bounds`` (-100)."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            longest = (longest + m - 1) // m * m
        batch = {
            "input_ids": torch.full((len(features), longest), self.pad_token_id, dtype=torch.long),
            "attention_mask": torch.zeros((len(features), longest), dtype=torch.long),
            "labels": torch.full((len(features), longest), IGNORE_INDEX, dtype=torch.long),
        }
        bounds = "lower_bounds" in features[0]
        if bounds:
            batch["lower_bounds"] = torch.full((len(features), longest), IGNORE_INDEX, dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            batch["input_ids"][i, :n] = torch.as_tensor(f["input_ids"])
            batch["attention_mask"][i, :n] = 1
            batch["labels"][i, :n] = torch.as_tensor(f["labels"])
            if bounds:
                batch["lower_bounds"][i, :n] = torch.as_tensor(f["lower_bounds"])
        return batch


@dataclass
class VisionLengthValueCollator:
    """:class:`LengthValueCollator` plus the images of every row through the processor's image
    processor (``images`` column of the examples: paths, PIL images or ``datasets`` Image values)."""

    processor: Any
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        from .vlm import image_batch

        tok = self.processor.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        batch = LengthValueCollator(pad, self.pad_to_multiple_of)(features)
        batch.update(image_batch(self.processor, [f.get("images") or [] for f in features]))
        return batch


def stats_dict(stats: BuildStats) -> dict:
    return {**asdict(stats), "truncated_share": stats.truncated_share}

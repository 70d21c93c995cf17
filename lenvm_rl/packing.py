"""Padding-free batches: several sequences share a row, position ids restart at 0 for each.

A padded batch computes every row to the length of its longest sequence; with the lengths sampled answers have
(a few tokens to the cap) about half of that is padding. Here a micro-batch's sequences are packed first-fit
decreasing into rows of at most ``row_tokens`` tokens; only the end of a row is padded. The batch carries
``position_ids`` and no ``attention_mask``: transformers (4.5x+, its ``find_packed_sequence_indices``) then
builds the block-diagonal causal mask from the restarting positions, so a sequence never attends to its
neighbours and every value equals the padded one (tests/test_trunk.py checks values and the loss). The loss is a
token mean over the labels, so how sequences are laid out in rows does not change it.

Why not ``transformers.DataCollatorWithFlattening``: it puts the whole batch in one row (on a CPU the attention
then costs the square of the batch's token count: nothing skips the masked blocks without flash attention) and
overwrites each sequence's first label with a separator, which would drop a trained position of ours.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .data import IGNORE_INDEX

TRUNK_KEY = "trunk_hidden_states"  # cached lower-layer states of an example (lenvm_rl.trunk), packed alike


def first_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into bins of total at most ``capacity`` (a longer item gets a bin alone)."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for b, free in enumerate(room):
            if lengths[i] <= free:
                bins[b].append(i)
                room[b] -= lengths[i]
                break
        else:
            bins.append([i])
            room.append(capacity - lengths[i])
    return bins


@dataclass
class PaddingFreeCollator:
    """Packs a micro-batch into rows of at most ``row_tokens`` tokens (``None``: one row for the whole batch).

    Returns ``input_ids``, ``position_ids`` (0.. for each sequence and for the padded tail of a row), ``labels``,
    and ``lower_bounds`` / ``trunk_hidden_states`` when the examples carry them; no ``attention_mask``.
    """

    pad_token_id: int
    row_tokens: int | None = None

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        lengths = [len(f["input_ids"]) for f in features]
        capacity = max(self.row_tokens or sum(lengths), max(lengths))
        rows = first_fit_decreasing(lengths, capacity)
        width = max(sum(lengths[i] for i in row) for row in rows)
        shape = (len(rows), width)
        batch = {
            "input_ids": torch.full(shape, self.pad_token_id, dtype=torch.long),
            "position_ids": torch.zeros(shape, dtype=torch.long),
            "labels": torch.full(shape, IGNORE_INDEX, dtype=torch.long),
        }
        if "lower_bounds" in features[0]:
            batch["lower_bounds"] = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
        if TRUNK_KEY in features[0]:
            h = features[0][TRUNK_KEY]
            batch[TRUNK_KEY] = torch.zeros((*shape, h.shape[-1]), dtype=h.dtype)
        for r, row in enumerate(rows):
            start = 0
            for i in row:
                f, n = features[i], lengths[i]
                span = slice(start, start + n)
                batch["input_ids"][r, span] = torch.as_tensor(f["input_ids"])
                batch["position_ids"][r, span] = torch.arange(n)
                batch["labels"][r, span] = torch.as_tensor(f["labels"])
                if "lower_bounds" in batch:
                    batch["lower_bounds"][r, span] = torch.as_tensor(f["lower_bounds"])
                if TRUNK_KEY in batch:
                    batch[TRUNK_KEY][r, span] = f[TRUNK_KEY]
                start += n
            batch["position_ids"][r, start:] = torch.arange(width - start)  # the tail: a segment of its own
        return batch

"""Scoring K candidate next tokens with the critic in one forward per decoding step.

The critic keeps a KV cache of the prefix. At each step it runs one forward over

    [previous chosen token, candidate_1, ..., candidate_K]

with a 4-D attention mask in which the previous token sees the prefix, and each candidate sees the prefix,
the previous token and itself only; all candidates share one position id. The mask is additive (0 where a
query may attend, the dtype's minimum where not, in the backbone's dtype): ``eager`` attention adds a 4-D
mask to the scores and ``sdpa`` accepts that form too; other attention implementations (flash, flex) do
not take such a mask and are refused. Afterwards the K candidate slots are cropped from the cache, so the
cache always holds exactly the chosen prefix. The KV cache is never copied K times. Rows are left-padded;
rows that finished early keep being fed (their values are ignored). ``NaiveCachedScorer`` is the sequential
baseline with the same interface (one forward per candidate), which the decoding benchmark times against it.
"""

from __future__ import annotations

from copy import deepcopy

import torch

from .modeling import LengthValueModel, position_ids_from_mask


class TreeScorer:
    """Incremental, batched candidate scoring for one generation call."""

    SUPPORTED_ATTENTION = ("eager", "sdpa")

    def __init__(self, model: LengthValueModel):
        attn = getattr(getattr(model, "config", None), "_attn_implementation", None)
        if attn is not None and attn not in self.SUPPORTED_ATTENTION:
            raise ValueError(
                f"Tree scoring needs a custom 4-D attention mask, which attn_implementation={attn!r} does not take; "
                f"load the critic with attn_implementation='sdpa' or 'eager' (supported: {self.SUPPORTED_ATTENTION})."
            )
        self.model = model
        self.cache = None
        self.key_mask = None  # (B, cache_len): which cached positions are real tokens (left padding is not)
        self.next_position = None  # (B,): position id of the next token appended to each row

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def start(self, prompt_ids: torch.Tensor, attention_mask: torch.Tensor, **vision) -> torch.Tensor:
        """Cache the (left-padded) prompts; returns ``V(s_0)`` at the last prompt token, (B,).

        ``vision``: a VLM prompt's image inputs (``pixel_values``, ``image_grid_thw``, ...); the cache then holds
        the image tokens, and the positions after them continue from the prefix's (3-D for Qwen2.5-VL)."""
        prompt_ids, attention_mask = prompt_ids.to(self.device), attention_mask.to(self.device).long()
        vision = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in vision.items() if v is not None}
        self.key_mask = attention_mask.bool()
        self.next_position = attention_mask.sum(-1)
        if prompt_ids.shape[1] == 0:  # nothing to cache yet: the first step() starts the cache
            self.cache = None
            return torch.zeros(prompt_ids.shape[0], device=self.device)
        positions = position_ids_from_mask(attention_mask)
        if vision or getattr(self.model, "is_vision", False):
            from .vlm import next_positions, prepare_vision_forward

            positions, vision = prepare_vision_forward(self.model, prompt_ids, attention_mask, None, None, vision)
            positions = position_ids_from_mask(attention_mask) if positions is None else positions
            self.next_position = next_positions(positions)
        out = self.model(
            input_ids=prompt_ids, attention_mask=attention_mask, position_ids=positions, use_cache=True, **vision
        )
        self.cache = out.cache
        return out.value[:, -1]

    @torch.no_grad()
    def step(self, previous: torch.Tensor, candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``previous`` (B,) to the prefix and score ``candidates`` (B, K) after it.

        Returns ``(v_previous, v_candidates)``: the value of the state ending at ``previous`` (B,) and of each
        state ``prefix + previous + candidate`` (B, K). EOS candidates are not special here (callers set 0).
        """
        previous, candidates = previous.to(self.device), candidates.to(self.device)
        batch, k = candidates.shape
        past = self.key_mask.shape[1]
        tokens = torch.cat([previous[:, None], candidates], dim=1)  # (B, 1 + K)
        positions = torch.cat([self.next_position[:, None], (self.next_position + 1)[:, None].expand(batch, k)], 1)
        # Query i attends to: the real prefix tokens, the previous token, and (for a candidate) itself.
        new = torch.eye(1 + k, dtype=torch.bool, device=self.device)
        new[:, 0] = True
        allowed = torch.cat(
            [self.key_mask[:, None, :].expand(batch, 1 + k, past), new[None].expand(batch, 1 + k, 1 + k)], dim=-1
        )[:, None]  # (B, 1, 1+K, past+1+K)
        out = self.model(
            input_ids=tokens,
            attention_mask=self._additive(allowed),
            position_ids=positions,
            cache=self.cache,
            use_cache=True,
        )
        self.cache = out.cache
        self.cache.crop(-k)  # drop the candidates, keep the chosen previous token
        self.key_mask = torch.cat([self.key_mask, torch.ones(batch, 1, dtype=torch.bool, device=self.device)], 1)
        self.next_position = self.next_position + 1
        return out.value[:, 0], out.value[:, 1:]

    def _additive(self, allowed: torch.Tensor) -> torch.Tensor:
        """A boolean mask (True = may attend) as the float mask attention adds to its scores: 0 or dtype min.

        A boolean 4-D mask would be added as 0 / 1 by eager attention, letting candidates see each other."""
        dtype = self.model._backbone_dtype()
        if not dtype.is_floating_point:  # a quantized backbone: its compute dtype is not the weights' dtype
            dtype = torch.float32
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
            ~allowed, torch.finfo(dtype).min
        )


@torch.no_grad()
def naive_candidate_values(
    model: LengthValueModel, prefix_ids: torch.Tensor, prefix_mask: torch.Tensor, candidates: torch.Tensor, **vision
) -> torch.Tensor:
    """Reference: one full forward per candidate over ``prefix + candidate`` (left-padded prefix). (B, K).
    ``vision``: the prefix's image inputs for a VLM critic."""
    out = []
    for j in range(candidates.shape[1]):
        ids = torch.cat([prefix_ids, candidates[:, j : j + 1]], 1)
        mask = torch.cat([prefix_mask, torch.ones_like(candidates[:, :1])], 1)
        out.append(model(input_ids=ids, attention_mask=mask, **vision).value[:, -1])
    return torch.stack(out, 1)


def copy_cache(cache):
    """A real copy of a KV cache (new tensors): a DynamicCache is rebuilt from its layers, anything else deep-copied."""
    from transformers import DynamicCache

    layers = getattr(cache, "layers", None)
    if type(cache) is DynamicCache and layers and all(getattr(x, "keys", None) is not None for x in layers):
        try:
            return DynamicCache(ddp_cache_data=[(x.keys, x.values) for x in layers])  # update() concatenates: a copy
        except TypeError:
            pass
    return deepcopy(cache)


class NaiveCachedScorer(TreeScorer):
    """TreeScorer's sequential twin (same cache of the prefix, same ``start``): per step, one 1-token forward
    appends the chosen previous token, then K separate 1-token forwards score the candidates, each on its own
    copy of the prefix cache (``copy=True``: what per-candidate requests amount to) or on the prefix cache
    itself, cropped back after each (``copy=False``: the best a sequential loop can do). Plain 2-D masks, so
    any attention implementation. The decoding benchmark times both against TreeScorer."""

    def __init__(self, model: LengthValueModel, copy: bool = True):
        self.model, self.copy = model, copy
        self.cache = self.key_mask = self.next_position = None

    @torch.no_grad()
    def step(self, previous: torch.Tensor, candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`TreeScorer.step`: ``(v_previous (B,), v_candidates (B, K))``."""
        previous, candidates = previous.to(self.device), candidates.to(self.device)
        ones = torch.ones(candidates.shape[0], 1, dtype=torch.bool, device=self.device)
        self.key_mask = torch.cat([self.key_mask, ones], 1)
        out = self.model(
            input_ids=previous[:, None],
            attention_mask=self.key_mask.long(),
            position_ids=self.next_position[:, None],
            cache=self.cache,
            use_cache=True,
        )
        self.cache, self.next_position = out.cache, self.next_position + 1
        mask, values = torch.cat([self.key_mask, ones], 1).long(), []
        for j in range(candidates.shape[1]):
            cache = copy_cache(self.cache) if self.copy else self.cache
            o = self.model(
                input_ids=candidates[:, j : j + 1],
                attention_mask=mask,
                position_ids=self.next_position[:, None],
                cache=cache,
                use_cache=True,
            )
            if not self.copy:
                self.cache.crop(-1)
            values.append(o.value[:, -1])
        return out.value[:, -1], torch.stack(values, 1)

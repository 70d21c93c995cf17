"""LengthCritic: a frozen LenVM for inference.

    critic = LengthCritic.from_pretrained("ckpt")
    critic.values(input_ids, attention_mask)           # (B, T) values in (-1, 0]
    critic.predict_length(["Write a haiku."])           # predicted answer tokens (EOS not counted)
    critic.length_shift(input_ids, attention_mask, prompt_lengths)   # -delta_t per completion token

Left and right padding give the same values (positions count real tokens only). No gradients, ever.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from .data import encode_prompt
from .modeling import LengthValueModel
from .returns import length_credit, td_residuals, value_to_length
from .vlm import VisionInputError, check_processor, is_processor, render_prompts, vision_inputs


class TokenizerMismatchError(ValueError):
    """A policy / generator tokenizer does not share the critic's vocabulary."""


class LengthCritic:
    """Inference-only wrapper around a :class:`LengthValueModel` and its tokenizer.

    A LenVM on a vision-language backbone also holds its ``processor`` (pass it as ``tokenizer`` or
    ``processor``); it renders prompts with images (:mod:`lenvm_rl.vlm`)."""

    def __init__(self, model: LengthValueModel, tokenizer=None, batch_size: int = 16, processor=None):
        if model.gamma is None:
            raise ValueError("The LenVM has no gamma; load it with LengthCritic.from_pretrained(path, gamma=...).")
        self.model = model.eval().requires_grad_(False)
        if is_processor(tokenizer):
            processor, tokenizer = tokenizer, None
        if processor is not None:
            check_processor(model, processor)
            tokenizer = tokenizer if tokenizer is not None else processor.tokenizer
        self.processor = processor
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.path = None

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        gamma: float | None = None,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        processor=None,
        **kwargs,
    ) -> LengthCritic:
        """Load a LenVM checkpoint; ``gamma`` only for the reference layout (no ``lenvm_config.json``).

        A VLM checkpoint loads the processor saved beside it unless ``processor`` is given."""
        from transformers import AutoTokenizer

        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        hf_kwargs = {"dtype": dtype} if dtype is not None else {}
        model = LengthValueModel.from_pretrained(path, gamma=gamma, **hf_kwargs)
        model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path))
        except (OSError, ValueError):
            tokenizer = None  # a head + backbone without tokenizer files: token ids still work
        if processor is None and model.is_vision:
            from .vlm import load_processor

            processor = load_processor(path)
        critic = cls(model, tokenizer, processor=processor, **kwargs)
        critic.path = str(path)  # where it was loaded from
        return critic

    @property
    def gamma(self) -> float:
        return self.model.gamma

    @property
    def use_chat_template(self) -> bool:
        """The prompt format the LenVM was trained on (saved in its ``lenvm_config.json``)."""
        return getattr(self.model, "use_chat_template", True)

    @property
    def eos_token_ids(self) -> frozenset[int]:
        """Every id that ends a generation of its family: the tokenizer's EOS and the EOS ids of the generation
        config saved with the LenVM (TRL stops on the same union, e.g. Qwen's ``<|im_end|>`` and
        ``<|endoftext|>``)."""
        ids = set(self.model.eos_token_ids)
        if self.tokenizer is not None and self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return frozenset(ids)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **vision) -> torch.Tensor:
        """Values ``V(s_t)`` for every position, (B, T) in (-1, 0]; padded positions hold 0. Batched by rows.

        ``vision``: image inputs of a VLM critic (``pixel_values``, ``image_grid_thw``, ...), scored in one forward."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        vision = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in vision.items() if v is not None}
        if vision:
            mask = attention_mask.to(self.device)
            out = self.model(input_ids=input_ids.to(self.device), attention_mask=mask, **vision).value * mask
            return out.to(input_ids.device)
        out = None
        for start in range(0, input_ids.shape[0], self.batch_size):
            mask = attention_mask[start : start + self.batch_size]
            # Columns after every row's last token are padding for the whole chunk: a causal model's values at
            # earlier positions do not depend on them, so they are not computed (rows sorted by length gain most).
            width = int(mask.nonzero()[:, 1].max()) + 1 if mask.any() else 1
            ids, mask = input_ids[start : start + self.batch_size, :width], mask[:, :width].to(self.device)
            value = self.model(input_ids=ids.to(self.device), attention_mask=mask).value * mask
            if out is None:  # padded positions hold 0
                out = torch.zeros(input_ids.shape, dtype=value.dtype, device=input_ids.device)
            out[start : start + len(ids), :width] = value.to(out.device)
        return out

    def _encode_prompts(self, prompts) -> list[list[int]]:
        """Prompt ids in the format the LenVM was trained on (chat template or plain text)."""
        if self.tokenizer is None:
            raise ValueError("This critic has no tokenizer; pass token ids instead of text.")
        return [encode_prompt(self.tokenizer, p, self.use_chat_template) for p in prompts]

    @torch.no_grad()
    def predict_length(
        self,
        prompts: Sequence[str] | Sequence[list[dict]] | None = None,
        prompt_ids: Sequence[Sequence[int]] | None = None,
        images: Sequence | None = None,
    ) -> torch.Tensor:
        """Predicted answer length in tokens, EOS not counted (docs/method.md): ``ln(1 + V(s_0)) / ln(gamma) - 1``,
        the steps to come from the end of each prompt less the EOS step (at least 0).

        Prompts are strings or chat messages (encoded as the critic was trained: with its chat template and
        generation prompt, or as plain text when ``use_chat_template`` is False), or already-tokenized
        ``prompt_ids``. The inversion of a mean value underestimates the mean length of a random-length answer
        (Jensen); it is the return-consistent length.

        ``images[i]`` lists prompt i's images (paths, PIL images or ``datasets`` Image values) for a VLM critic;
        prompts are then rendered by its processor (chat messages with ``{"type": "image"}`` parts, or strings
        that get the image parts in front).
        """
        if (prompts is None) == (prompt_ids is None):
            raise ValueError("pass exactly one of prompts or prompt_ids")
        if images is not None or (prompts is not None and self._has_image_parts(prompts)):
            if prompts is None:
                raise ValueError(
                    "images go with prompts (text or chat messages), which the processor renders; "
                    "prompt_ids cannot be paired with images"
                )
            enc = render_prompts(self._vision_processor(), prompts, images, self.use_chat_template)
            v_last = self.values(enc["input_ids"], enc["attention_mask"], **vision_inputs(enc))[:, -1]
            return value_to_length(v_last, self.gamma).float()
        ids = self._encode_prompts(prompts) if prompts is not None else [list(p) for p in prompt_ids]
        if any(len(p) == 0 for p in ids):
            raise ValueError("empty prompt: the state s_0 sits on the last prompt token, so a prompt needs one")
        input_ids, mask = left_pad(ids, self._pad_id())
        v_last = self.values(input_ids, mask)[:, -1]
        return value_to_length(v_last, self.gamma).float()

    @torch.no_grad()
    def length_shift(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_lengths: Sequence[int] | torch.Tensor
    ) -> torch.Tensor:
        """Length shift of each completion token: ``-delta_t = V(s_t) - r - gamma * V(s_{t+1})``.

        Rows are right-padded ``prompt + completion``; ``prompt_lengths[b]`` counts row b's prompt tokens.
        Output (B, T): entry ``[b, j]`` is the shift of the token at position j (a completion token), 0 elsewhere.
        Positive means the token moved the generation toward a longer continuation. A final EOS (any of
        :attr:`eos_token_ids`) has V = 0.
        """
        values = self.values(input_ids, attention_mask).double()
        positions = torch.arange(values.shape[1], device=values.device)[None]
        p = torch.as_tensor(prompt_lengths, device=values.device)[:, None]
        eos = torch.tensor(sorted(self.eos_token_ids), device=values.device, dtype=torch.long)
        if len(eos):  # the state after a completion's EOS is terminal: V = 0 by definition
            values = values.masked_fill((positions >= p) & torch.isin(input_ids.to(values.device), eos), 0.0)
        deltas = td_residuals(values[:, :-1], self.gamma, next_values=values[:, 1:])
        shift = torch.zeros_like(values)
        shift[:, 1:] = -deltas
        return (shift * ((positions >= p) & attention_mask.bool())).float()

    # ------------------------------------------------------------------ RL
    @torch.no_grad()
    def completion_values(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
        **vision,
    ) -> torch.Tensor:
        """``V(s_0 .. s_T)`` for left-padded prompts and right-padded completions (the GRPO layout), (B, T + 1).
        ``vision``: the prompts' image inputs for a VLM critic."""
        ids = torch.cat([prompt_ids, completion_ids], 1)
        mask = torch.cat([prompt_mask, completion_mask], 1)
        values = self.values(ids, mask, **vision).double()
        return values[:, prompt_ids.shape[1] - 1 :]

    def length_advantages(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
        terminated: torch.Tensor | None = None,
        lam: float = 1.0,
        **vision,
    ) -> torch.Tensor:
        """Per-token length advantages ``GAE_lambda(delta_len)``, (B, T): add ``s *`` them to a task advantage
        (``s > 0`` favours shorter). ``terminated`` (B,) defaults to "the last real token is one of
        :attr:`eos_token_ids`"; ``vision``: the prompts' image inputs for a VLM critic (as
        :meth:`completion_values` takes them)."""
        values = self.completion_values(prompt_ids, prompt_mask, completion_ids, completion_mask, **vision)
        terminated = self._terminated(completion_ids, completion_mask) if terminated is None else terminated
        return length_credit(values, completion_mask, terminated.to(values.device), self.gamma, lam).float()

    def _terminated(self, completion_ids: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
        if not self.eos_token_ids:
            raise ValueError("This critic knows no EOS id (no tokenizer, no generation config); pass terminated=.")
        return terminated_rows(completion_ids, completion_mask, self.eos_token_ids)

    # ------------------------------------------------------------------ checks
    @staticmethod
    def _has_image_parts(prompts) -> bool:
        from .vlm import count_image_parts

        return any(not isinstance(p, str) and count_image_parts(p) for p in prompts)

    def _vision_processor(self):
        """The processor that renders image prompts, or a clear error when this critic cannot read images."""
        if not self.model.is_vision:
            raise VisionInputError(
                "This LenVM is text-only (its backbone has no vision tower), so it cannot score images. Drop the "
                "images (and image parts), or use a LenVM trained on a vision-language backbone."
            )
        if self.processor is None:
            raise VisionInputError(
                "This VLM critic has no processor to render image prompts; load it with "
                "LengthCritic.from_pretrained(ckpt, processor=AutoProcessor.from_pretrained(...)) "
                "or pass processor= to LengthCritic."
            )
        return self.processor

    def check_tokenizer(self, tokenizer) -> None:
        """Raise :class:`TokenizerMismatchError` when ``tokenizer`` does not share this critic's vocabulary
        (a processor is checked by its tokenizer, and against this critic's image tokens)."""
        if is_processor(tokenizer):
            if self.model.is_vision:
                check_processor(self.model, tokenizer)
            tokenizer = tokenizer.tokenizer
        if self.tokenizer is None:
            vocab = self.model.config.get_text_config().vocab_size
            if len(tokenizer) > vocab:
                raise TokenizerMismatchError(
                    f"The tokenizer has {len(tokenizer)} tokens but the critic's embedding "
                    f"holds {vocab}; use a policy from the critic's model family."
                )
            return
        check_same_vocab(self.tokenizer, tokenizer)

    def _pad_id(self) -> int:
        tok = self.tokenizer
        if tok is None:
            return 0
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def check_same_vocab(reference, other, what: str = "policy") -> None:
    """Token ids mean the same thing in both tokenizers (same vocabulary, same EOS)."""
    ref_vocab, other_vocab = reference.get_vocab(), other.get_vocab()
    if ref_vocab != other_vocab:
        only_ref = len(set(ref_vocab.items()) - set(other_vocab.items()))
        only_other = len(set(other_vocab.items()) - set(ref_vocab.items()))
        raise TokenizerMismatchError(
            f"The {what} tokenizer ({getattr(other, 'name_or_path', '?')}, {len(other_vocab)} tokens) differs from the "
            f"critic's ({getattr(reference, 'name_or_path', '?')}, {len(ref_vocab)} tokens): {only_ref} entries only in "
            f"the critic's, {only_other} only in the {what}'s. The critic scores token ids, so it needs the same "
            "vocabulary: train a LenVM on a backbone of the policy's family (or re-tokenize text for it)."
        )
    if reference.eos_token_id != other.eos_token_id:
        raise TokenizerMismatchError(
            f"EOS differs: critic {reference.eos_token!r} vs {what} {other.eos_token!r}; "
            "the critic's terminal state is its EOS token."
        )


def terminated_rows(completion_ids: torch.Tensor, completion_mask: torch.Tensor, eos_ids) -> torch.Tensor:
    """(B,) True where a right-padded completion's last real token is one of ``eos_ids``."""
    lengths = completion_mask.long().sum(-1)
    last_token = completion_ids.gather(1, (lengths - 1).clamp(min=0)[:, None])[:, 0]
    return (lengths > 0) & torch.isin(last_token, torch.as_tensor(list(eos_ids), device=last_token.device))


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(len(r) for r in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, r in enumerate(rows):
        if len(r):
            ids[i, longest - len(r) :] = torch.as_tensor(r)
            mask[i, longest - len(r) :] = 1
    return ids, mask

"""The language tower's layer stack: found in a text or vision-language backbone, cut for one forward, frozen below
a layer. Used by trunk-feature training (:mod:`lenvm_rl.trunk`), ``freeze_layers`` and the GRPO critic refresh."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from .vlm import _unwrap


def _language_model(backbone: nn.Module) -> nn.Module:
    """The text decoder of a backbone: the backbone itself, or a vision-language body's language tower."""
    body = _unwrap(backbone)
    return body.get_decoder() if hasattr(body, "get_decoder") else body


def decoder_layers(backbone: nn.Module) -> nn.ModuleList:
    """The language tower's stack of transformer blocks (``layers`` or ``h``), for a text or vision backbone."""
    owner, name = decoder_layers_slot(backbone)
    return getattr(owner, name)


def decoder_layers_slot(backbone: nn.Module) -> tuple[nn.Module, str]:
    """``(module, attribute)`` holding the language tower's layer stack, so it can be read or swapped."""
    lm = _language_model(backbone)
    for owner in (lm, getattr(lm, "model", None)):
        for name in ("layers", "h"):
            if isinstance(getattr(owner, name, None), nn.ModuleList):
                return owner, name
    raise ValueError(
        f"Could not find the transformer layers of {type(_unwrap(backbone)).__name__} (looked for `layers` and `h`); "
        "train it with freeze_layers=0."
    )


def final_norm_slot(backbone: nn.Module) -> tuple[nn.Module, str] | None:
    """``(module, attribute)`` holding the norm after the last layer (``norm``, ``ln_f``, ``final_layernorm``)."""
    lm = _language_model(backbone)
    for name in ("norm", "ln_f", "final_layernorm"):
        if isinstance(getattr(lm, name, None), nn.Module):
            return lm, name
    return None


@contextmanager
def only_layers(backbone: nn.Module, start: int, stop: int):
    """Within the block, the backbone's forward runs layers ``start:stop`` only, and its final norm only when
    ``stop`` is the last layer. The modules themselves are untouched (same parameters), only the stack is cut."""
    owner, name = decoder_layers_slot(backbone)
    stack = getattr(owner, name)
    norm = final_norm_slot(backbone)
    saved_norm = getattr(*norm) if norm else None
    setattr(owner, name, nn.ModuleList(list(stack)[start:stop]))
    if norm and stop < len(stack):
        setattr(*norm, nn.Identity())
    try:
        yield
    finally:
        setattr(owner, name, stack)
        if norm:
            setattr(*norm, saved_norm)


def run_upper_layers(backbone: nn.Module, hidden, attention_mask, position_ids, layers: int | None) -> torch.Tensor:
    """The final (normed) hidden states from ``hidden``, the output of the lowest ``layers`` layers."""
    n = len(decoder_layers(backbone))
    if layers is None or not 0 < layers <= n:
        raise ValueError(f"trunk_layers must lie in 1..{n} to run the layers above a cached trunk, got {layers}")
    if layers == n:
        return hidden  # cached after the final norm: the head reads it as it is
    hidden = hidden.to(next(backbone.parameters()).dtype)
    checkpointing = getattr(backbone, "is_activation_checkpointing", None)  # transformers >= 5.25's name
    if checkpointing is None:
        checkpointing = getattr(backbone, "is_gradient_checkpointing", False)
    if checkpointing and torch.is_grad_enabled():
        hidden = hidden.requires_grad_(True)  # reentrant checkpointing passes no gradient without one input needing it
    with only_layers(backbone, layers, n):
        out = backbone(inputs_embeds=hidden, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    return out.last_hidden_state


def freeze_lower_layers(model: nn.Module, n: int) -> int:
    """Freeze a LengthValueModel's token embeddings and lowest ``n`` layers; return how many parameters stay trainable.

    The upper layers, the final norm and the value head keep training. Backpropagation stops at the first
    trainable layer, so a step costs the forward pass plus the backward of the upper layers only: the cheap way
    to fit a critic on a CPU. A vision tower is frozen too (its features feed the frozen lower layers anyway).
    """
    if model.is_peft:
        raise ValueError("freeze_layers applies to full fine-tuning; LoRA already freezes the backbone (use 0).")
    layers = decoder_layers(model.backbone)
    if not 0 <= n <= len(layers):
        raise ValueError(f"freeze_layers must lie in [0, {len(layers)}] (the backbone's layers), got {n}")
    if n == 0:
        return sum(p.numel() for p in model.parameters() if p.requires_grad)
    trainable = {id(p) for layer in layers[n:] for p in layer.parameters()}
    trainable |= {id(p) for p in model.v_head.parameters()}
    norm = final_norm_slot(model.backbone)
    if norm is not None:
        trainable |= {id(p) for p in getattr(*norm).parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

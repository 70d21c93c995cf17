"""Trunk features: train a LenVM's upper layers on cached outputs of its frozen lower layers.

Full fine-tuning recomputes every layer of every token in every epoch, forward and backward: about three forward
passes per token and epoch. With ``trunk_layers=L`` the token embeddings and the lowest ``L`` layers stay at the
backbone's weights, so their output for a training example never changes: it is computed once, in a batched
no-grad pass (lowest layers only), stored in half precision, and each epoch runs only layers ``L+1..`` and the
head on it (forward and backward). Nothing else changes: the model keeps all its layers, the saved checkpoint
is an ordinary LenVM checkpoint, and evaluation runs it end to end.

``L`` = all layers: the cached state is the backbone's final hidden state *after* its final norm, exactly what
the value head reads at inference and what a generator of the same weights feeds its LM head. The backbone is
then frozen whole (final norm included) and only the head trains on fixed features: the critic's trunk is the
generator's own, so guided decoding could reuse the generator's prefix states and GRPO's policy updates never
touch a trunk the critic shares only by copy.

The upper layers run through the backbone's own ``forward`` (mask, rotary positions, layer types as the model
builds them) with its layer stack cut to the upper slice for the call; ``check_trunk_split`` verifies on a short
padded batch that lower + upper reproduce the full forward before any cache is built, and refuses a backbone where
they do not (e.g. one that rescales its input embeddings).

Caches are keyed by the frozen weights (a hash of the embeddings, the lowest ``L`` layers and, for ``L`` = all,
the final norm), ``L``, the tokenized examples, the compute precision and the storage dtype; a file whose
recorded key differs from the one asked for is refused with the fields that differ.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .data import LengthValueCollator
from .layers import (  # noqa: F401  (run_upper_layers: importable from here, where the trunk is explained)
    decoder_layers,
    final_norm_slot,
    freeze_lower_layers,
    only_layers,
    run_upper_layers,
)
from .modeling import LengthValueModel, position_ids_from_mask
from .packing import TRUNK_KEY

logger = logging.getLogger(__name__)

CACHE_FORMAT = "1"
CACHE_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
# Config fields that change what the frozen layers compute besides their weights (positions, norms, shapes).
_STRUCTURE_KEYS = (
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "rms_norm_eps",
    "layer_norm_eps",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "sliding_window",
    "layer_types",
)


def num_layers(model: LengthValueModel) -> int:
    return len(decoder_layers(model.backbone))


def freeze_trunk(model: LengthValueModel, layers: int) -> int:
    """Freeze the embeddings and the lowest ``layers`` layers (and the final norm when that is all of them); return
    the number of trainable parameters."""
    n = num_layers(model)
    if not 0 <= layers <= n:
        raise ValueError(
            f"trunk_layers={layers}, but the backbone has {n} layers: use 1..{n} ({n} trains a head on the frozen "
            "model's final states), or None for full fine-tuning."
        )
    trainable = freeze_lower_layers(model, layers)
    if layers == n:  # the cache holds the states after the final norm: it is part of the frozen trunk
        slot = final_norm_slot(model.backbone)
        for p in getattr(*slot).parameters() if slot else ():
            trainable -= p.numel() if p.requires_grad else 0
            p.requires_grad_(False)
    return trainable


def trunk_states(backbone: nn.Module, input_ids, attention_mask, position_ids, layers: int) -> torch.Tensor:
    """Hidden states after the lowest ``layers`` layers (after the final norm when that is all of them)."""
    with only_layers(backbone, 0, layers):
        out = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    return out.last_hidden_state


def check_trunk_split(model: LengthValueModel, layers: int) -> float:
    """Max abs difference between the full forward and lower + upper layers on a short padded batch; raises when
    the split does not reproduce the model (its forward does more than run the layers in turn)."""
    backbone = model.backbone
    device = next(backbone.parameters()).device
    vocab = backbone.get_input_embeddings().num_embeddings
    ids = torch.randint(0, vocab, (2, 12), generator=torch.Generator().manual_seed(0)).to(device)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    pos = position_ids_from_mask(mask)
    training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            full = backbone(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).last_hidden_state
            split = run_upper_layers(backbone, trunk_states(backbone, ids, mask, pos, layers), mask, pos, layers)
    finally:
        backbone.train(training)
    keep = mask.bool()
    diff = float((split - full)[keep].abs().max())
    scale = float(full[keep].abs().max())
    tol = 1e-4 if full.dtype == torch.float32 else 2e-2
    if not diff <= tol * max(scale, 1.0):
        raise NotImplementedError(
            f"Trunk features do not reproduce {type(backbone).__name__}'s forward (max abs difference {diff:.3g} "
            f"between layers 1..{layers} then the rest and the whole model): its forward does more than run its "
            "layers in turn. Train it with trunk_layers=None (freeze_layers=N freezes the same layers, uncached)."
        )
    return diff


# ---------------------------------------------------------------------------------------------------- the cache
def backbone_fingerprint(model: LengthValueModel, layers: int) -> str:
    """Hash of what the cached states depend on: the embeddings' and lowest layers' weights (and the final norm's
    when ``layers`` is all of them), plus the config fields that shape their computation."""
    backbone = model.backbone
    n = num_layers(model)
    modules = [backbone.get_input_embeddings(), *list(decoder_layers(backbone))[:layers]]
    if layers == n and final_norm_slot(backbone):
        modules.append(getattr(*final_norm_slot(backbone)))
    h = hashlib.blake2b(digest_size=16)
    cfg = model.config.to_dict()
    h.update(json.dumps({k: cfg.get(k) for k in _STRUCTURE_KEYS}, sort_keys=True, default=str).encode())
    for module in modules:
        for name, t in module.state_dict().items():
            h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def data_fingerprint(input_ids: Sequence[Sequence[int]]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for ids in input_ids:
        h.update(np.asarray(ids, dtype=np.int64).tobytes())
        h.update(b"|")
    return h.hexdigest()


def trunk_key(model: LengthValueModel, layers: int, input_ids, dtype: str, compute: str) -> dict[str, str]:
    """What a cache is valid for (safetensors metadata: strings only)."""
    return {
        "format": CACHE_FORMAT,
        "backbone": backbone_fingerprint(model, layers),
        "trunk_layers": str(layers),
        "num_layers": str(num_layers(model)),
        "data": data_fingerprint(input_ids),
        "examples": str(len(input_ids)),
        "dtype": dtype,
        "compute": compute,
    }


def cache_path(cache_dir: str | os.PathLike, key: dict[str, str]) -> Path:
    digest = hashlib.blake2b(json.dumps(key, sort_keys=True).encode(), digest_size=10).hexdigest()
    return Path(cache_dir) / f"trunk-L{key['trunk_layers']}-{digest}.safetensors"


@dataclass
class TrunkCache:
    """Every example's states after the frozen trunk, concatenated: example ``i`` is ``hidden[offsets[i]:offsets[i+1]]``."""

    hidden: torch.Tensor
    offsets: torch.Tensor
    key: dict[str, str]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.hidden[self.offsets[i] : self.offsets[i + 1]]

    def save(self, path: str | os.PathLike) -> Path:
        """Written to a temporary sibling and renamed, so a cut-off write never leaves a cache behind."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
        os.close(fd)
        try:
            save_file({"hidden": self.hidden.contiguous(), "offsets": self.offsets}, tmp, metadata=self.key)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, expected: dict[str, str]) -> TrunkCache:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            wrong = {k: (meta.get(k), v) for k, v in expected.items() if meta.get(k) != v}
            if wrong:
                what = "; ".join(f"{k}: {a!r} in the file, {b!r} wanted" for k, (a, b) in wrong.items())
                raise ValueError(
                    f"The trunk cache {path} was made for other inputs ({what}): another backbone, trunk_layers, "
                    "data or precision. Delete it, or point trunk_cache_dir elsewhere, and it is recomputed."
                )
            return cls(f.get_tensor("hidden"), f.get_tensor("offsets"), meta)


def compute_trunk_cache(
    model: LengthValueModel,
    input_ids: Sequence[Sequence[int]],
    layers: int,
    key: dict[str, str],
    batch_size: int = 8,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> TrunkCache:
    """One no-grad pass of the lowest ``layers`` layers over the examples, batched by similar length."""
    backbone = model.backbone
    device = next(backbone.parameters()).device
    dtype = CACHE_DTYPES[key["dtype"]]
    lengths = [len(x) for x in input_ids]
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.long)
    offsets[1:] = torch.as_tensor(lengths).cumsum(0)
    hidden = torch.empty(int(offsets[-1]), model.config.hidden_size, dtype=dtype)
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    training = backbone.training
    backbone.eval()
    try:
        for b in range(0, len(order), batch_size):
            chunk = order[b : b + batch_size]
            width = max(lengths[i] for i in chunk)
            ids = torch.zeros((len(chunk), width), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, i in enumerate(chunk):
                ids[r, : lengths[i]] = torch.as_tensor(input_ids[i])
                mask[r, : lengths[i]] = 1
            ids, mask = ids.to(device), mask.to(device)
            with torch.no_grad(), autocast():
                states = trunk_states(backbone, ids, mask, position_ids_from_mask(mask), layers)
            for r, i in enumerate(chunk):
                stored = states[r, : lengths[i]].to(dtype).cpu()
                if not torch.isfinite(stored).all():
                    raise ValueError(
                        f"Trunk states overflow {key['dtype']} (largest magnitude "
                        f"{float(states[r, : lengths[i]].abs().max()):.3g}); use trunk_cache_dtype='bfloat16'."
                    )
                hidden[offsets[i] : offsets[i + 1]] = stored
    finally:
        backbone.train(training)
    return TrunkCache(hidden, offsets, key)


def trunk_features(
    model: LengthValueModel,
    input_ids: Sequence[Sequence[int]],
    layers: int,
    cache_dir: str | os.PathLike | None = None,
    dtype: str = "bfloat16",
    compute: str = "float32",
    batch_size: int = 8,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> TrunkCache:
    """The examples' trunk states: loaded from ``cache_dir`` when a cache with the same key is there, else computed
    (and saved there when a directory is given). ``compute`` names the precision of the pass (part of the key)."""
    if dtype not in CACHE_DTYPES:
        raise ValueError(f"trunk_cache_dtype must be one of {sorted(CACHE_DTYPES)}, got {dtype!r}")
    check_trunk_split(model, layers)
    key = trunk_key(model, layers, input_ids, dtype, compute)
    path = cache_path(cache_dir, key) if cache_dir is not None else None
    if path is not None and path.is_file():
        cache = TrunkCache.load(path, key)
        logger.info("trunk features: loaded %s (%d examples)", path, len(cache))
        return cache
    t0 = time.perf_counter()
    cache = compute_trunk_cache(model, input_ids, layers, key, batch_size, autocast)
    logger.info(
        "trunk features: %d examples, %d tokens through %d layers in %.1f s",
        len(cache),
        cache.hidden.shape[0],
        layers,
        time.perf_counter() - t0,
    )
    if path is not None:
        cache.save(path)
    return cache


class TrunkFeatureDataset(torch.utils.data.Dataset):
    """A training dataset whose examples also carry their cached trunk states (``trunk_hidden_states``)."""

    def __init__(self, dataset, cache: TrunkCache):
        if len(dataset) != len(cache):
            raise ValueError(f"{len(dataset)} examples but a trunk cache of {len(cache)}; rebuild the cache.")
        self.dataset, self.cache = dataset, cache

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        example = dict(self.dataset[i])
        states = self.cache[i]
        if len(states) != len(example["input_ids"]):
            raise ValueError(f"example {i} has {len(example['input_ids'])} tokens but {len(states)} cached states")
        return {**example, TRUNK_KEY: states}


def example_input_ids(dataset) -> list[list[int]]:
    """Every example's ``input_ids`` (a column read at once from a ``datasets.Dataset``)."""
    if hasattr(dataset, "column_names"):
        return list(dataset["input_ids"])
    return [dataset[i]["input_ids"] for i in range(len(dataset))]


@dataclass
class TrunkPaddedCollator(LengthValueCollator):
    """``LengthValueCollator`` that also right-pads the examples' cached trunk states (zeros, masked anyway)."""

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = super().__call__([{k: v for k, v in f.items() if k != TRUNK_KEY} for f in features])
        if TRUNK_KEY in features[0]:
            h = features[0][TRUNK_KEY]
            states = torch.zeros((*batch["input_ids"].shape, h.shape[-1]), dtype=h.dtype)
            for i, f in enumerate(features):
                states[i, : len(f[TRUNK_KEY])] = f[TRUNK_KEY]
            batch[TRUNK_KEY] = states
        return batch

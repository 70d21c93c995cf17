"""The Length Value Model: a transformer backbone plus a small value head.

    h_t = backbone(prompt + y_1..y_t)[-1]      final-layer (normed) hidden state, no LM head
    z_t = summary(SiLU(fc(h_t)))               LengthValueHead
    V_t = -sigmoid(z_t)                        in (-1, 0): minus the discounted share of length still to come

Checkpoint layout (compatible with the published LenVM checkpoints):

    ckpt/config.json, model.safetensors        the backbone, a standard HF model dir (AutoModel loads it)
    ckpt/tokenizer files                       incl. the chat template
    ckpt/value_head.safetensors                v_head.fc.{weight,bias}, v_head.summary.{weight,bias}
    ckpt/lenvm_config.json                     gamma, base model, head type, max_length, format version,
                                               use_chat_template (the prompt format it was trained on),
                                               rollout_sampling (its rollouts' temperature / top_p, when known)
    ckpt/generation_config.json                the base model's, for its EOS ids (every id that ends an answer)

A LoRA checkpoint holds the peft adapter (adapter_config.json, adapter_model.safetensors) in place of the
backbone weights; ``merge_lora`` turns it into the full layout.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.utils import ModelOutput

from .defaults import DEFAULT_MODEL, is_default_model, portable_model_name, resolve_model
from .layers import run_upper_layers
from .returns import check_gamma
from .vlm import IGNORED_KEYS, VISION_KEYS, _unwrap, names_vision_model, text_hidden_size

VALUE_HEAD_FILE = "value_head.safetensors"
LENVM_CONFIG_FILE = "lenvm_config.json"
ADAPTER_CONFIG_FILE = "adapter_config.json"
FORMAT_VERSION = 1
HEAD_TYPE = "fc-silu-summary"
HEAD_KEYS = ("v_head.fc.weight", "v_head.fc.bias", "v_head.summary.weight", "v_head.summary.bias")


class LengthValueHead(nn.Module):
    """``Linear(H, H) -> SiLU -> Linear(H, 1)`` with the reference names ``fc`` and ``summary``."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.fc = nn.Linear(hidden_size, hidden_size)
        self.act = nn.SiLU()
        self.summary = nn.Linear(hidden_size, 1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.summary(self.act(self.fc(hidden_states))).squeeze(-1)


@dataclass
class LengthValueOutput(ModelOutput):
    """``value`` (B, T) in (-1, 0); ``logits`` (B, T) the pre-sigmoid ``z``; ``cache`` (KV cache) if asked.

    The field is ``value``, not ``values``: a ModelOutput is a dict, and ``values`` would shadow
    ``dict.values()``, which DDP calls on outputs.
    """

    value: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: Any = None


def _base_model(model: nn.Module) -> nn.Module:
    """The transformer body of a model, so a CausalLM passed in never computes vocabulary logits."""
    if isinstance(model, PreTrainedModel) and getattr(model, "base_model_prefix", None):
        inner = getattr(model, model.base_model_prefix, None)
        if isinstance(inner, nn.Module):
            return inner
    return model


def load_vision_backbone(name: str, **hf_kwargs) -> nn.Module:
    """The multimodal body of an ``AutoModelForImageTextToText`` checkpoint (hub id or local path)."""
    from transformers import AutoModelForImageTextToText

    return _base_model(AutoModelForImageTextToText.from_pretrained(name, **hf_kwargs))


def _cache_kwarg(backbone: nn.Module) -> str:
    """transformers 5.24 renamed ``past_key_values=`` to ``cache=`` (the old name warns); older ones lack it."""
    body = backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone
    return "cache" if "cache" in inspect.signature(body.forward).parameters else "past_key_values"


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that count only real tokens, so left- and right-padded rows score identically."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class LengthValueModel(nn.Module):
    """Backbone + :class:`LengthValueHead`; ``forward`` returns per-token values, never vocabulary logits.

    Build a fresh one with :meth:`from_backbone`, load a trained one with :meth:`from_pretrained`.
    ``gamma`` is part of the model: targets, inversion and RL shaping must all use the same value.
    ``use_chat_template`` is the prompt format it was trained on (chat template, or plain text); every prompt
    it scores must be encoded the same way.
    """

    supports_gradient_checkpointing = True

    def __init__(
        self,
        backbone: nn.Module,
        gamma: float | None = None,
        head: LengthValueHead | None = None,
        base_model_name: str | None = None,
        max_length: int | None = None,
        use_chat_template: bool = True,
        generation_config=None,
    ):
        super().__init__()
        self.backbone = backbone
        self.config = backbone.config  # the backbone's HF config (Trainer and peft look for `.config`)
        self.v_head = head if head is not None else LengthValueHead(text_hidden_size(self.config))
        self.gamma = None if gamma is None else check_gamma(gamma)
        self.base_model_name = base_model_name or getattr(self.config, "_name_or_path", None)
        self.max_length = max_length
        self.use_chat_template = use_chat_template
        self.rollout_sampling = None  # its training answers' {"temperature", "top_p"}: guided decoding follows them
        # The base model's generation config, saved with the LenVM: a backbone without an LM head has none of its
        # own, but its EOS ids say which completions ended (Qwen ends on <|im_end|> or <|endoftext|>).
        self.generation_config = generation_config or generation_config_of(backbone, self.base_model_name)
        self.v_head.to(dtype=self._backbone_dtype())

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_backbone(
        cls, model_name_or_path: str | nn.Module | None = None, gamma: float | None = None, **hf_kwargs
    ) -> LengthValueModel:
        """A backbone (hub id, local path, the embedded default when None, or a loaded model) + a fresh head."""
        if isinstance(model_name_or_path, nn.Module):
            backbone, name = _base_model(model_name_or_path), getattr(model_name_or_path, "name_or_path", None)
        else:
            name = resolve_model(model_name_or_path)
            if names_vision_model(name):  # a VLM: the multimodal body of AutoModelForImageTextToText
                backbone = load_vision_backbone(name, **hf_kwargs)
            else:
                backbone = _base_model(AutoModel.from_pretrained(name, **hf_kwargs))
        return cls(backbone, gamma=gamma, base_model_name=name)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, gamma: float | None = None, **hf_kwargs) -> LengthValueModel:
        """Load a LenVM checkpoint (our format, a LoRA checkpoint, or the published reference layout).

        ``gamma`` is required for the reference layout (no ``lenvm_config.json``; the published Qwen2.5
        checkpoints used 0.997) and must match the saved value otherwise.
        """
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(
                f"LenVM checkpoint dir {path} does not exist (expected a folder with {VALUE_HEAD_FILE} and a backbone)."
            )
        head_file = path / VALUE_HEAD_FILE
        if not head_file.is_file():
            raise FileNotFoundError(
                f"{path} has no {VALUE_HEAD_FILE}, so it is not a LenVM checkpoint (a plain model dir has no "
                "trained value head). Point at a dir written by LengthValueModel.save_pretrained / `lenvm train`, "
                "or use LengthValueModel.from_backbone(...) to start a fresh head on this model."
            )
        meta = read_lenvm_config(path)
        gamma = resolve_gamma(meta.get("gamma"), gamma, path)
        if (path / ADAPTER_CONFIG_FILE).is_file():
            backbone = _load_lora_backbone(path, meta, **hf_kwargs)
        else:
            backbone = _base_model(AutoModel.from_pretrained(str(path), **hf_kwargs))
        base = DEFAULT_MODEL if meta.get("base_model_embedded") else meta.get("base_model")
        model = cls(
            backbone,
            gamma=gamma,
            base_model_name=base,
            max_length=meta.get("max_length"),
            use_chat_template=saved_use_chat_template(meta, path),
            generation_config=load_generation_config(path),  # older checkpoints: None, then the base model's
        )
        model.load_head(head_file)
        model.rollout_sampling = meta.get("rollout_sampling")
        return model

    def load_head(self, head_file: str | os.PathLike) -> None:
        """Load ``value_head.safetensors`` strictly: a head that does not fit is an error, never re-initialised."""
        state = load_file(str(head_file))
        missing = [k for k in HEAD_KEYS if k not in state]
        unexpected = [k for k in state if k not in HEAD_KEYS]
        if missing or unexpected:
            raise ValueError(
                f"{head_file} does not hold a LenVM head: missing keys {missing}, unexpected keys "
                f"{unexpected}; expected exactly {list(HEAD_KEYS)}."
            )
        hidden = text_hidden_size(self.config)
        if tuple(state["v_head.fc.weight"].shape) != (hidden, hidden):
            raise ValueError(
                f"{head_file} was trained on a backbone of hidden size "
                f"{state['v_head.fc.weight'].shape[0]}, but this backbone has {hidden}."
            )
        dtype, device = self._backbone_dtype(), next(self.backbone.parameters()).device
        self.v_head.load_state_dict({k[len("v_head.") :]: v.to(dtype) for k, v in state.items()}, strict=True)
        self.v_head.to(device)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Any = None,
        use_cache: bool = False,
        trunk_hidden_states: torch.Tensor | None = None,
        trunk_layers: int | None = None,
        **kwargs,
    ) -> LengthValueOutput:
        """Values for every position of ``input_ids``; extra keys (labels, ...) are ignored.

        ``cache`` / ``use_cache`` pass a KV cache through (incremental scoring); training never uses one.
        Vision inputs (``pixel_values``, ``image_grid_thw``, ... see :mod:`lenvm_rl.vlm`) go to a VLM backbone;
        a text-only one refuses them.

        Padding-free rows: ``position_ids`` restarting at 0 for each sequence packed into a row and no
        ``attention_mask``; transformers then keeps the packed sequences apart (:mod:`lenvm_rl.packing`).
        ``trunk_hidden_states`` (the cached output of the frozen lowest ``trunk_layers`` layers,
        :mod:`lenvm_rl.trunk`) runs only the layers above them; ``input_ids`` are then not read.
        """
        packed = attention_mask is None and position_ids is not None and cache is None
        if attention_mask is None and cache is None and not packed:
            attention_mask = torch.ones_like(input_ids)
        if trunk_hidden_states is not None:
            if use_cache or cache is not None:
                raise ValueError("trunk_hidden_states are a training input; they take no KV cache.")
            if position_ids is None:
                position_ids = position_ids_from_mask(attention_mask)
            hidden = run_upper_layers(self.backbone, trunk_hidden_states, attention_mask, position_ids, trunk_layers)
            z = self.v_head(hidden.to(self.v_head.fc.weight.dtype)).float()
            return LengthValueOutput(value=-torch.sigmoid(z), logits=z)
        vision = {k: kwargs[k] for k in VISION_KEYS + IGNORED_KEYS if kwargs.get(k) is not None}
        if (vision or self.is_vision) and packed:
            raise ValueError(
                "Padding-free rows (position_ids without attention_mask) are not supported for a "
                "vision-language backbone; pass an attention_mask (padding_free=False)."
            )
        if vision or self.is_vision:
            from .vlm import prepare_vision_forward

            position_ids, vision = prepare_vision_forward(self, input_ids, attention_mask, position_ids, cache, vision)
        if position_ids is None and cache is None and attention_mask.dim() == 2:
            position_ids = position_ids_from_mask(attention_mask)
        backbone_kwargs = {"use_cache": use_cache}
        if cache is not None:
            backbone_kwargs[_cache_kwarg(self.backbone)] = cache
        out = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **backbone_kwargs, **vision
        )
        z = self.v_head(out.last_hidden_state.to(self.v_head.fc.weight.dtype)).float()
        new_cache = (out.get("cache") or out.get("past_key_values")) if use_cache else None
        return LengthValueOutput(value=-torch.sigmoid(z), logits=z, cache=new_cache)

    # ------------------------------------------------------------------ HF / Trainer plumbing
    def activation_checkpointing_enable(self, activation_checkpointing_kwargs: dict | None = None, **kwargs) -> None:
        """What ``Trainer`` calls for ``gradient_checkpointing=True`` (transformers >= 5.25: with ``every_n_layers``
        and ``offload``; older versions call ``gradient_checkpointing_enable``)."""
        if hasattr(self.backbone, "activation_checkpointing_enable"):
            self.backbone.activation_checkpointing_enable(activation_checkpointing_kwargs, **kwargs)
        else:
            self.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs=activation_checkpointing_kwargs)
        if hasattr(self.backbone, "enable_input_require_grads"):
            self.backbone.enable_input_require_grads()  # needed when the embeddings are frozen (LoRA)

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None, **kwargs) -> None:
        self.activation_checkpointing_enable(gradient_checkpointing_kwargs, **kwargs)

    def gradient_checkpointing_disable(self) -> None:
        self.backbone.gradient_checkpointing_disable()

    @property
    def eos_token_ids(self) -> list[int]:
        """The EOS ids of the generation config (the model config's EOS when there is none)."""
        eos = getattr(self.generation_config, "eos_token_id", None)
        if eos is None:
            eos = getattr(self.config.get_text_config(), "eos_token_id", None)
        return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)

    @property
    def is_vision(self) -> bool:
        """A vision-language backbone (its config has a ``vision_config``)."""
        return getattr(self.config, "vision_config", None) is not None

    @property
    def is_peft(self) -> bool:
        from peft import PeftModel

        return isinstance(self.backbone, PeftModel)

    def _backbone_dtype(self) -> torch.dtype:
        return next(self.backbone.parameters()).dtype

    # ------------------------------------------------------------------ saving
    def lenvm_config(self) -> dict:
        # base_model: the name the user gave (the hub id for the embedded default), never a machine's cache path;
        # loading a full checkpoint never reads it, a LoRA one reads it to find the base weights.
        return {
            "format_version": FORMAT_VERSION,
            "gamma": self.gamma,
            "base_model": portable_model_name(self.base_model_name),
            "base_model_embedded": is_default_model(self.base_model_name),
            "head_type": HEAD_TYPE,
            "hidden_size": text_hidden_size(self.config),
            "max_length": self.max_length,
            "use_chat_template": bool(self.use_chat_template),
            "adapter": self.is_peft,
            **({"rollout_sampling": self.rollout_sampling} if self.rollout_sampling else {}),
        }

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        state_dict: dict | None = None,
        safe_serialization: bool = True,
        **kwargs,
    ) -> None:
        """Write the checkpoint layout above. ``state_dict`` (as Trainer passes under ZeRO-3) is split by prefix."""
        if self.gamma is None:
            raise ValueError(
                "Refusing to save a LenVM without gamma: values are meaningless without it. Set "
                "model.gamma (the trainer does this when gamma='auto' is resolved)."
            )
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        if state_dict is None:
            state_dict = self.state_dict()
        head = {k: v.detach().contiguous().cpu() for k, v in state_dict.items() if k.startswith("v_head.")}
        backbone = {k[len("backbone.") :]: v for k, v in state_dict.items() if k.startswith("backbone.")}
        if self.is_peft:
            self.backbone.save_pretrained(out, state_dict=backbone or None, **kwargs)
        else:
            self.backbone.save_pretrained(
                out, state_dict=backbone or None, safe_serialization=safe_serialization, **kwargs
            )
        save_file(head, str(out / VALUE_HEAD_FILE))
        if self.generation_config is not None:
            self.generation_config.save_pretrained(out)
        (out / LENVM_CONFIG_FILE).write_text(json.dumps(self.lenvm_config(), indent=2) + "\n")


def load_generation_config(source: str | os.PathLike | None):
    """The generation config saved in a model dir (or of a hub id already in the local cache), else None."""
    from transformers import GenerationConfig

    if source is None:
        return None
    try:  # never a download: a missing file only means the model config's EOS is used
        return GenerationConfig.from_pretrained(str(source), local_files_only=True)
    except (OSError, ValueError):
        return None


def generation_config_of(backbone: nn.Module, base_model_name: str | None):
    """A backbone's own generation config, else its base model's, else one made from its model config."""
    from transformers import GenerationConfig

    own = getattr(_unwrap(backbone), "generation_config", None)
    if own is not None:
        return own
    found = load_generation_config(base_model_name)
    if found is not None:
        return found
    try:
        return GenerationConfig.from_model_config(backbone.config)
    except (AttributeError, ValueError):
        return None


def read_lenvm_config(path: str | os.PathLike) -> dict:
    f = Path(path) / LENVM_CONFIG_FILE
    if not f.is_file():
        return {}
    meta = json.loads(f.read_text())
    if meta.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
        raise ValueError(
            f"{f} has format version {meta['format_version']}, newer than this lenvm-rl understands "
            f"({FORMAT_VERSION}); upgrade lenvm-rl."
        )
    return meta


_warned_no_prompt_format = False


def saved_use_chat_template(meta: dict, where: Any = "the checkpoint") -> bool:
    """The saved prompt format; a checkpoint without one (older, or the reference layout) keeps the chat
    template, as lenvm-rl always used then, and says so once per process."""
    global _warned_no_prompt_format
    saved = meta.get("use_chat_template")
    if saved is None:
        if not _warned_no_prompt_format:
            _warned_no_prompt_format = True
            warnings.warn(
                f"{where} does not record its prompt format (use_chat_template in {LENVM_CONFIG_FILE}); "
                "assuming prompts rendered with the chat template. If it was trained on plain-text "
                "prompts, set model.use_chat_template = False (and re-save it to record that).",
                stacklevel=3,
            )
        return True
    return bool(saved)


def resolve_gamma(saved: float | None, given: float | None, where: Any = "the checkpoint") -> float:
    """The gamma to use: the saved one; a given one must agree with it; the reference layout needs one given."""
    if saved is None:
        if given is None:
            raise ValueError(
                f"{where} has no {LENVM_CONFIG_FILE} (the published reference layout), so its gamma is unknown. "
                "Pass gamma explicitly, e.g. from_pretrained(path, gamma=0.997) for the published Qwen2.5 LenVMs."
            )
        return check_gamma(given)
    if given is not None and abs(float(given) - float(saved)) > 1e-12:
        raise ValueError(
            f"{where} was trained with gamma={saved}, but gamma={given} was given. Values are only "
            "meaningful with the training gamma; drop the argument to use the saved one."
        )
    return check_gamma(saved)


def _load_lora_backbone(path: Path, meta: dict, **hf_kwargs) -> nn.Module:
    from peft import PeftModel

    adapter_cfg = json.loads((path / ADAPTER_CONFIG_FILE).read_text())
    base = meta.get("base_model") or adapter_cfg.get("base_model_name_or_path")
    base = resolve_model(DEFAULT_MODEL if meta.get("base_model_embedded") else base)  # the embedded weights
    if names_vision_model(base):
        backbone = load_vision_backbone(base, **hf_kwargs)
    else:
        backbone = _base_model(AutoModel.from_pretrained(base, **hf_kwargs))
    return PeftModel.from_pretrained(backbone, str(path))


def merge_lora(adapter_dir: str | os.PathLike, output_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Merge a LoRA LenVM checkpoint into the full layout (backbone weights + head), written atomically."""
    model = LengthValueModel.from_pretrained(adapter_dir)
    if not model.is_peft:
        raise ValueError(f"{adapter_dir} holds no LoRA adapter ({ADAPTER_CONFIG_FILE} missing); nothing to merge.")
    model.backbone = model.backbone.merge_and_unload()
    out = Path(output_dir)
    ensure_writable_output(out, overwrite)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        _copy_tokenizer_files(Path(adapter_dir), tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _copy_tokenizer_files(src: Path, dst: Path) -> None:
    for f in src.iterdir():
        if f.is_file() and (
            f.name.startswith("tokenizer")
            or f.name in {"special_tokens_map.json", "chat_template.jinja", "vocab.json", "merges.txt"}
        ):
            shutil.copy2(f, dst / f.name)


def is_checkpoint_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / VALUE_HEAD_FILE).is_file()


def ensure_writable_output(path: str | os.PathLike, overwrite: bool) -> None:
    """Refuse to write over an existing LenVM checkpoint unless told to, so no trained model is lost."""
    p = Path(path)
    if p.exists() and (is_checkpoint_dir(p) or any(p.glob("checkpoint-*"))) and not overwrite:
        raise FileExistsError(
            f"{p} already holds a LenVM checkpoint. Pass --overwrite_output_dir "
            "(overwrite=True) to replace it, or choose another output dir."
        )
    p.parent.mkdir(parents=True, exist_ok=True)


def backbone_load_kwargs(model_args) -> dict:
    """``from_pretrained`` kwargs from TRL's ``ModelConfig`` (dtype, attention, 4-bit QLoRA)."""
    kwargs = {"revision": model_args.model_revision}
    if model_args.dtype not in (None, "auto"):
        kwargs["dtype"] = getattr(torch, model_args.dtype)
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    if model_args.load_in_4bit or model_args.load_in_8bit:
        if not torch.cuda.is_available():
            raise RuntimeError(
                "QLoRA (load_in_4bit / load_in_8bit) needs a CUDA GPU: bitsandbytes quantizes on the GPU. "
                "On this machine train LoRA without quantization (use_peft: true, load_in_4bit: false), or run on "
                "a CUDA machine with: pip install 'lenvm-rl[qlora]'."
            )
        from trl import get_kbit_device_map, get_quantization_config

        kwargs["quantization_config"] = get_quantization_config(model_args)
        kwargs["device_map"] = get_kbit_device_map()
    return kwargs

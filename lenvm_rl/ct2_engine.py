"""CTranslate2 as the CPU rollout engine: the generator converted once (cached), then sampled in large batches.

On a 2-core CPU, transformers' ``generate`` spends most of a decode step outside the matrix multiplies; CTranslate2
runs the same model with fused kernels and a preallocated cache, several times faster at the same settings
(evals/benchmarks/rollout_sampler.py). It samples the same model: the conversion keeps float32 weights, and the
sampling applies temperature, then nucleus (top-p) over the full vocabulary, as ``generate`` does.

A quantized conversion (int8) samples a slightly different model, so it is refused unless a distribution check
(``python -m evals.benchmarks.engine_distribution``) showed its lengths match float32 HF sampling for that model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .defaults import cache_dir

ENGINE = "ctranslate2"
INSTALL_COMMAND = "pip install 'lenvm-rl[cpu]'  # or: pip install ctranslate2"
QUANTIZATIONS = ("float32", "int8")
SOURCE_FILE = "lenvm_source.json"  # what a converted folder was made from: checked on every load
# Distribution check a quantized engine needs (issue's rule): KS p over lengths, paired per-prompt mean gap.
MIN_KS_P, MAX_MEAN_GAP, MIN_CHECK_COMPLETIONS = 0.05, 0.05, 400


class EngineUnavailable(RuntimeError):
    """The engine cannot sample this model here (not installed, or an architecture it does not convert)."""


def available() -> bool:
    """Whether CTranslate2 imports here."""
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        return False
    return True


def supported_architectures() -> list[str]:
    """The transformers config classes CTranslate2's converter takes (``LlamaConfig``, ``Qwen2Config``, ...)."""
    from ctranslate2.converters.transformers import _MODEL_LOADERS

    return sorted(_MODEL_LOADERS)


def check_convertible(model_path: str) -> None:
    """Raise :class:`EngineUnavailable` with the reason when the engine cannot sample ``model_path``."""
    if not available():
        raise EngineUnavailable(f"CTranslate2 is not installed; {INSTALL_COMMAND}")
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path)
    name = type(config).__name__
    if getattr(config, "vision_config", None) is not None:
        raise EngineUnavailable(f"{model_path} is a vision-language model ({name}); the engine samples text only.")
    if name not in supported_architectures():
        raise EngineUnavailable(
            f"CTranslate2 cannot convert {model_path} ({name}). It converts: {', '.join(supported_architectures())}."
        )


def fingerprint(model_path: str) -> str:
    """A hash of what the conversion reads: the config and tokenizer files and every weight file, whole.

    Two different models (or a model re-saved with other weights at the same path) get different fingerprints,
    so a conversion cache can never be used for another model (hashing 0.5 GB takes about a second)."""
    h = hashlib.sha256()
    folder = Path(model_path)
    for name in sorted(os.listdir(folder)):
        path = folder / name
        if not path.is_file():
            continue
        if name.endswith(".json"):
            h.update(name.encode() + path.read_bytes())
        elif name.endswith((".safetensors", ".bin")):
            h.update(f"{name}:".encode())
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 24), b""):
                    h.update(block)
    return h.hexdigest()[:16]


def converted_model(model_path: str, quantization: str = "float32", progress: bool = True) -> Path:
    """The CTranslate2 folder of ``model_path`` (an HF checkpoint folder), converting it on first use.

    Cached under ``<lenvm cache>/ctranslate2/<name>-<quantization>-<fingerprint>``. The conversion is written to a
    temporary sibling and renamed, so an interrupted one never leaves a half folder; a folder whose recorded source
    differs from ``model_path``'s fingerprint is refused."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"unknown engine quantization {quantization!r}; use one of {QUANTIZATIONS}")
    check_convertible(model_path)
    import ctranslate2

    source = {
        "model": str(model_path),
        "fingerprint": fingerprint(model_path),
        "quantization": quantization,
        "ctranslate2": ctranslate2.__version__,
    }
    slug = Path(str(model_path).rstrip("/")).name or "model"
    target = cache_dir() / ENGINE / f"{slug}-{quantization}-{source['fingerprint']}"
    if (target / SOURCE_FILE).is_file():
        recorded = json.loads((target / SOURCE_FILE).read_text())
        if {k: recorded.get(k) for k in ("fingerprint", "quantization")} != {
            k: source[k] for k in ("fingerprint", "quantization")
        }:
            raise ValueError(
                f"{target} was converted from another model ({recorded}); delete that folder to convert {model_path}."
            )
        return target
    if progress:
        print(f"[lenvm] converting {model_path} for CTranslate2 ({quantization}) into {target} (once)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        convert(model_path, tmp / "model", quantization)
        (tmp / "model" / SOURCE_FILE).write_text(json.dumps(source, indent=1))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp / "model", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def convert(model_path: str | os.PathLike, target: str | os.PathLike, quantization: str = "float32") -> None:
    """Convert the HF checkpoint folder ``model_path`` into ``target`` (no cache, no checks: :func:`converted_model`
    is the cached, checked entry point). Weights load in float32, so a float32 conversion samples the same model."""
    from ctranslate2.converters import TransformersConverter

    TransformersConverter(str(model_path), load_as_float16=False).convert(
        str(target), quantization=quantization, force=True
    )


def check_quantized(model: str, quantization: str, distribution_check: str | None) -> None:
    """Refuse a quantized engine unless ``distribution_check`` (a JSON written by the distribution benchmark) shows
    its lengths match float32 HF sampling of ``model``: KS p > 0.05 on >= 400 completions per arm, and per-prompt
    mean lengths within 5 % on average (the mean over prompts of (engine - hf) / hf, paired by prompt)."""
    if quantization == "float32":
        return
    how = (
        f"A {quantization} engine samples a slightly different model. Run `python -m evals.benchmarks.engine_distribution "
        f"--model {model} --quantization {quantization}` and pass its JSON as distribution_check "
        "(--engine_distribution_check), or use --engine_quantization float32."
    )
    if not distribution_check:
        raise ValueError(f"{how}")
    record = json.loads(Path(distribution_check).read_text())
    problems = []
    if record.get("model") != model or record.get("quantization") != quantization:
        problems.append(f"it checked {record.get('model')!r} / {record.get('quantization')!r}")
    if record.get("completions_per_arm", 0) < MIN_CHECK_COMPLETIONS:
        problems.append(f"{record.get('completions_per_arm')} completions per arm (< {MIN_CHECK_COMPLETIONS})")
    if not record.get("ks_p", 0) > MIN_KS_P:
        problems.append(f"KS p {record.get('ks_p')} (needs > {MIN_KS_P})")
    if not abs(record.get("mean_rel_gap", 1)) <= MAX_MEAN_GAP:
        problems.append(f"per-prompt mean gap {record.get('mean_rel_gap')} (needs within +-{MAX_MEAN_GAP})")
    if problems:
        raise ValueError(f"{distribution_check} does not show a matching distribution: {'; '.join(problems)}. {how}")


# Generation-config fields that change what is sampled, and whether the engine reproduces them.
_MAPPED = {"suppress_tokens", "repetition_penalty", "no_repeat_ngram_size"}
_UNSUPPORTED = (
    "bad_words_ids",
    "begin_suppress_tokens",
    "sequence_bias",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "min_new_tokens",
    "typical_p",
    "epsilon_cutoff",
    "eta_cutoff",
    "min_p",
    "encoder_repetition_penalty",
)


def generation_options(generation_config, tokenizer=None) -> dict:
    """Engine options that reproduce the generator's own generation config (as ``generate`` applies it before our
    sampling settings): suppressed tokens, repetition penalty, no-repeat n-grams. A config that sets something the
    engine cannot reproduce raises :class:`EngineUnavailable` (with ``backend="auto"``: a fallback to hf)."""
    if generation_config is None:
        return {}
    set_fields = [f for f in _UNSUPPORTED if getattr(generation_config, f, None) not in (None, 0, 1.0, [], False)]
    if getattr(generation_config, "min_length", 0) or 0:
        set_fields.append("min_length")
    if set_fields:
        raise EngineUnavailable(
            f"the generator's generation config sets {', '.join(set_fields)}, which the engine does not reproduce; "
            "sample with --backend hf."
        )
    options = {}
    if getattr(generation_config, "suppress_tokens", None):
        ids = [[int(t)] for t in generation_config.suppress_tokens]
        # the engine takes tokens, not ids: converted once here, not per batch
        options["suppress_sequences"] = [tokenizer.convert_ids_to_tokens(s) for s in ids] if tokenizer else ids
    if (getattr(generation_config, "repetition_penalty", None) or 1.0) != 1.0:
        options["repetition_penalty"] = float(generation_config.repetition_penalty)
    if getattr(generation_config, "no_repeat_ngram_size", None):
        options["no_repeat_ngram_size"] = int(generation_config.no_repeat_ngram_size)
    return options


def sample_batches(
    ct2_path: Path,
    prompt_ids: list[list[int]],
    tokenizer,
    eos: set[int],
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
    threads: int | None = None,
    quantization: str = "float32",
    options: dict | None = None,
) -> list[list[int]]:
    """One generated id list per prompt: up to and with the first EOS id, or ``max_new_tokens`` ids when cut.
    ``options``: :func:`generation_options` of the generator."""
    import ctranslate2

    generator = _generator(ct2_path, quantization, threads)
    ctranslate2.set_random_seed(seed)
    results = generator.generate_batch(
        [tokenizer.convert_ids_to_tokens(ids) for ids in prompt_ids],
        max_length=max_new_tokens,
        sampling_topk=0 if temperature > 0 else 1,  # 0 = the full vocabulary; 1 = greedy
        sampling_temperature=temperature or 1.0,
        sampling_topp=top_p,
        end_token=sorted(eos),
        return_end_token=True,
        include_prompt_in_result=False,  # the prompt fills the cache in one forward
        **(options or {}),
    )
    return [list(r.sequences_ids[0]) for r in results]


_GENERATORS: dict[tuple, object] = {}


def release() -> None:
    """Drop the loaded generator (its memory; a caller about to delete the converted folder)."""
    _GENERATORS.clear()


def _generator(ct2_path: Path, quantization: str, threads: int | None):
    """One loaded generator per (folder, threads), reused across calls of a process."""
    import ctranslate2
    import torch

    threads = threads or torch.get_num_threads()
    key = (str(ct2_path), quantization, threads)
    if key not in _GENERATORS:
        _GENERATORS.clear()  # one model in memory at a time
        _GENERATORS[key] = ctranslate2.Generator(
            str(ct2_path), device="cpu", compute_type=quantization, intra_threads=threads
        )
    return _GENERATORS[key]

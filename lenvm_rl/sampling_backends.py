"""The samplers behind :func:`lenvm_rl.rollouts.generate_rollouts`: transformers' padded ``generate`` (``hf``, the
reference), its continuous batching (``hf_continuous``), CTranslate2 (``ctranslate2``, the CPU engine) and vLLM
(``vllm``, CUDA), and the record each writes per completion. Every one samples with the same settings (temperature,
top-p over the full vocabulary, the cap, the generator's EOS ids), so their outputs share one distribution."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace

import torch
from tqdm.auto import tqdm

from .data import encode_prompt
from .defaults import resolve_model

PAGE_SIZE = 64  # tokens per block of the continuous backend's paged cache


def _make_record(prompt: dict, k: int, ids: list[int], finished: bool, text: str, generator: str, sampling) -> dict:
    extra = {key: v for key, v in prompt.items() if key not in ("prompt_id", "prompt")}
    return {
        "prompt_id": prompt["prompt_id"],
        "prompt": prompt["prompt"],
        "completion": text,
        "completion_ids": ids,
        "finish_reason": "stop" if finished else "length",
        "num_tokens": len(ids),
        "sample_index": k,
        "generator": generator,
        "sampling": sampling.record(),
        **extra,
    }


def _row_record(prompt: dict, k: int, row: list[int], eos: set[int], tokenizer, generator, sampling) -> dict:
    """The record of one generated row: up to and with its first EOS (finished), else at most the cap."""
    end = next((i for i, t in enumerate(row) if t in eos), None)
    ids = row[: end + 1] if end is not None else row[: sampling.max_new_tokens]
    body = ids[:-1] if end is not None else ids
    text = tokenizer.decode(body, skip_special_tokens=True)
    return _make_record(prompt, k, ids, end is not None, text, generator, sampling)


def _torch_dtype(dtype):
    """``"auto"`` -> the fastest dtype this machine computes in; a name -> the torch dtype; a dtype as is."""
    from .defaults import fast_dtype

    return getattr(torch, fast_dtype() if dtype == "auto" else dtype) if isinstance(dtype, str) else dtype


def _append(output: Path, records: Iterable[dict]) -> None:
    with output.open("a") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _eos_ids(tokenizer, model) -> set[int]:
    ids = {tokenizer.eos_token_id}
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
    return {i for i in ids if i is not None}


def _generate_hf(
    todo, output, generator, sampling, batch_size, dtype, use_chat_template, progress, processor=None
) -> None:
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

    from .vlm import (
        ProcessorMismatchError,
        VisionInputError,
        auto_processor,
        is_processor,
        names_vision_model,
        record_images,
        render_prompts,
        vision_inputs,
    )

    path = resolve_model(generator)
    if processor is None and names_vision_model(path):
        processor = auto_processor(path)
        if not is_processor(processor):
            raise ProcessorMismatchError(
                f"{generator} is a vision-language model, but AutoProcessor loaded a "
                f"{type(processor).__name__} (no image processor) from it; pass processor=."
            )
    if processor is None and any(record_images(p) for p, _ in todo):
        raise VisionInputError(
            f"Prompts carry images, but the generator {generator} is text-only (its config has no "
            "vision_config). Use a vision-language generator (e.g. Qwen/Qwen2.5-VL-3B-Instruct) "
            "or drop the images."
        )
    tokenizer = processor.tokenizer if processor is not None else AutoTokenizer.from_pretrained(path)
    if processor is None:
        tokenizer.padding_side = "left"  # render_prompts left-pads a processor's batch itself
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch_dtype = _torch_dtype(dtype)
    auto_model = AutoModelForCausalLM if processor is None else AutoModelForImageTextToText
    model = auto_model.from_pretrained(path, dtype=torch_dtype)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    eos = _eos_ids(tokenizer, model)
    if processor is None:
        encoded = {p["prompt_id"]: encode_prompt(tokenizer, p["prompt"], use_chat_template) for p, _ in todo}
    # A batch runs until its longest completion ends, so batch prompts that likely have similar answer
    # lengths: ids sort by their source order (the built-in ids start with the category). Each batch is
    # written as soon as it is done.
    todo = sorted(todo, key=lambda item: (item[0]["prompt_id"], item[1]))
    bar = tqdm(total=len(todo), desc="rollouts", unit="completion", disable=not progress)
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        if processor is None:
            enc = tokenizer.pad({"input_ids": [encoded[p["prompt_id"]] for p, _ in batch]}, return_tensors="pt")
        else:  # the processor renders the batch with its images (left-padded), as build_examples(..., processor) does
            rendered = render_prompts(
                processor, [p["prompt"] for p, _ in batch], [record_images(p) for p, _ in batch], use_chat_template
            )
            enc = {
                "input_ids": rendered["input_ids"],
                "attention_mask": rendered["attention_mask"],
                **vision_inputs(rendered),
            }
        enc = {k: v.to(device) if torch.is_tensor(v) else v for k, v in enc.items()}
        torch.manual_seed(sampling.seed * 1_000_003 + start)
        with torch.no_grad():
            out = model.generate(
                **enc,
                do_sample=sampling.temperature > 0,
                temperature=sampling.temperature or None,
                top_p=sampling.top_p,
                top_k=0,
                max_new_tokens=sampling.max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=sorted(eos),
            )
        new = out[:, enc["input_ids"].shape[1] :].tolist()
        _append(
            output, [_row_record(p, k, row, eos, tokenizer, generator, sampling) for (p, k), row in zip(batch, new)]
        )
        bar.update(len(batch))
    bar.close()


def _generate_hf_continuous(todo, output, generator, sampling, batch_size, dtype, use_chat_template, progress) -> None:
    """Text prompts through transformers' continuous batching (``generate_batch``): a finished row's slot is
    refilled with the next prompt at once, where a padded ``generate`` batch runs until its longest row ends.
    Same sampling settings, so the same output distribution (not the same random draws). Records are written
    every ``8 * batch_size`` completions, so an interrupted run resumes."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    path = resolve_model(generator)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=_torch_dtype(dtype))
    model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    eos = _eos_ids(tokenizer, model)
    # The model's own generation config (suppressed tokens, ...) with our sampling on top, as generate() does.
    config = GenerationConfig.from_dict(model.generation_config.to_dict())
    config.update(
        max_new_tokens=sampling.max_new_tokens,
        do_sample=sampling.temperature > 0,
        temperature=sampling.temperature or None,
        top_p=sampling.top_p,
        top_k=0,
        eos_token_id=sorted(eos),
        pad_token_id=tokenizer.pad_token_id,
    )
    encoded = {p["prompt_id"]: encode_prompt(tokenizer, p["prompt"], use_chat_template) for p, _ in todo}
    chunk = 8 * batch_size
    bar = tqdm(total=len(todo), desc="rollouts (continuous)", unit="completion", disable=not progress)
    for start in range(0, len(todo), chunk):
        batch = todo[start : start + chunk]
        # Size the paged cache for batch_size rows at once: left to itself it sizes for a GPU's memory, which on
        # CPU costs minutes per call.
        longest = max(len(encoded[p["prompt_id"]]) for p, _ in batch) + sampling.max_new_tokens
        slots = ContinuousBatchingConfig(
            page_size=PAGE_SIZE,
            num_blocks=batch_size * (math.ceil(longest / PAGE_SIZE) + 1),
            max_batch_tokens=max(256, batch_size * 16),
            max_requests_per_batch=batch_size,
            seed=sampling.seed * 1_000_003 + start,
        )
        with torch.no_grad():
            results = model.generate_batch(
                [encoded[p["prompt_id"]] for p, _ in batch],
                generation_config=config,
                continuous_batching_config=slots,
                progress_bar=progress,  # per completion: the outer bar only moves once a chunk is written
                warmup=False,
            )
        # A fresh manager names its requests req_0, req_1, ... in input order.
        rows = [results[f"req_{i}"] for i in range(len(batch))]
        failed = [r.error for r in rows if r.error]
        if failed:
            raise RuntimeError(f"continuous batching failed on {len(failed)} rows: {failed[0]}")
        _append(
            output,
            [
                _row_record(p, k, list(row.generated_tokens), eos, tokenizer, generator, sampling)
                for (p, k), row in zip(batch, rows)
            ],
        )
        bar.update(len(batch))
    bar.close()


def _generate_ct2(
    todo, output, generator, sampling, batch_size, dtype, use_chat_template, progress, quantization, distribution_check
) -> None:
    """Text prompts through CTranslate2 (:mod:`lenvm_rl.ct2_engine`): the generator converted once (float32 unless a
    distribution check allows int8), batches of ``batch_size`` rows that shrink as rows end, each batch written when
    done (so a run resumes). Same sampling settings and EOS ids as ``hf``, so the same output distribution."""
    from transformers import AutoTokenizer

    from . import ct2_engine

    if dtype not in ("auto", "float32"):
        raise ValueError(f"--backend ctranslate2 samples float32 (or a checked int8); dtype {dtype!r} is for hf.")
    path = resolve_model(generator)
    ct2_engine.check_quantized(generator, quantization, distribution_check)
    generation_config = _generation_config(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    options = ct2_engine.generation_options(generation_config, tokenizer)  # refuses what it cannot reproduce
    ct2_path = ct2_engine.converted_model(path, quantization, progress)
    eos = _eos_ids(tokenizer, SimpleNamespace(generation_config=generation_config))
    encoded = {p["prompt_id"]: encode_prompt(tokenizer, p["prompt"], use_chat_template) for p, _ in todo}
    todo = sorted(todo, key=lambda item: (item[0]["prompt_id"], item[1]))  # similar answer lengths share a batch
    bar = tqdm(total=len(todo), desc="rollouts (ctranslate2)", unit="completion", disable=not progress)
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        rows = ct2_engine.sample_batches(
            ct2_path,
            [encoded[p["prompt_id"]] for p, _ in batch],
            tokenizer,
            eos,
            sampling.max_new_tokens,
            sampling.temperature,
            sampling.top_p,
            seed=sampling.seed * 1_000_003 + start,
            quantization=quantization,
            options=options,
        )
        _append(
            output, [_row_record(p, k, row, eos, tokenizer, generator, sampling) for (p, k), row in zip(batch, rows)]
        )
        bar.update(len(batch))
    bar.close()


def _generate_vllm(todo, output, generator, sampling, dtype, use_chat_template) -> None:
    """vLLM path for GPU users: same records, one ``LLM.generate`` call per missing sample index."""
    try:
        from vllm import LLM, SamplingParams
    except ImportError:
        raise ImportError(
            "--backend vllm needs vLLM on a CUDA machine: pip install 'lenvm-rl[vllm]'. "
            "Use --backend hf (the default) on CPU."
        ) from None
    path = resolve_model(generator)
    llm = LLM(model=path, dtype="bfloat16" if dtype == "auto" else dtype, seed=sampling.seed)
    tokenizer = llm.get_tokenizer()
    eos_ids = _eos_ids(tokenizer, SimpleNamespace(generation_config=_generation_config(path)))
    by_index: dict[int, list[dict]] = {}
    for prompt, k in todo:
        by_index.setdefault(k, []).append(prompt)
    for k, prompts in sorted(by_index.items()):
        params = SamplingParams(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            seed=sampling.seed * 1_000_003 + k,
        )
        inputs = [{"prompt_token_ids": encode_prompt(tokenizer, p["prompt"], use_chat_template)} for p in prompts]
        records = []
        for prompt, result in zip(prompts, llm.generate(inputs, params)):
            o = result.outputs[0]
            ids, finished = _vllm_completion_ids(o, eos_ids, tokenizer.eos_token_id)
            records.append(_make_record(prompt, k, ids, finished, o.text, generator, sampling))
        _append(output, records)


def _generation_config(path: str):
    """The generator's generation config (its EOS ids may differ from the tokenizer's), or None."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(path)
    except (OSError, ValueError):
        return None


def _vllm_completion_ids(output, eos_ids: set[int], eos: int) -> tuple[list[int], bool]:
    """``(completion_ids, finished)`` of a vLLM ``CompletionOutput``; a finished one ends in exactly one EOS.

    vLLM says ``finish_reason="stop"`` both for the tokenizer's EOS (``stop_reason=None``) and for a
    generation-config EOS that differs from it (``stop_reason=<that token id>``), and keeps the stop token at
    the end of ``token_ids``. That token stays the terminal one (``data.completion_ids_for`` maps it to the
    LenVM tokenizer's EOS); only a finished completion without one gets one appended.
    """
    ids = list(output.token_ids)
    finished = output.finish_reason == "stop"
    if finished:
        stop = getattr(output, "stop_reason", None)  # a stop token id, a stop string, or None (EOS)
        stop = stop if isinstance(stop, int) and not isinstance(stop, bool) else None
        terminal = eos_ids | ({stop} if stop is not None else set())
        if not ids or ids[-1] not in terminal:
            ids.append(stop if stop is not None else eos)
    return ids, finished

"""Sampling completions to pretrain a LenVM on.

A rollout record is one JSON line per completion:

    prompt_id       stable id of the prompt (the resume key, with sample_index)
    prompt          chat messages [{"role": "user", "content": ...}]; with images, the user content is a list of
                    parts, {"type": "image"} (one per image, in order) and {"type": "text", "text": ...}
    images          (prompts with images only) the image references: paths as given, or the absolute paths of
                    PNG files under <output>.images/ for images given as pixels (PIL images, datasets Image values)
    completion      decoded text, without the EOS token
    completion_ids  generator token ids; they end with the EOS token exactly when finish_reason == "stop"
    finish_reason   "stop" (ended with EOS: a terminal state) or "length" (cut at max_new_tokens)
    num_tokens      len(completion_ids), EOS included
    sample_index    0 .. num_samples - 1 for this prompt
    generator       model id or path that produced it
    sampling        {"temperature", "top_p", "max_new_tokens", "seed"}

Runs append to the output file and resume: (prompt_id, sample_index) pairs already written are skipped,
so an interrupted run continues without duplicates.

Prompts with images (an ``images`` or ``image`` column) need a vision-language generator (one that
``AutoModelForImageTextToText`` loads) and the HF backend; its processor renders them (lenvm_rl.vlm), and
``lenvm_rl.data.build_examples(records, processor)`` trains on the records as written.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from types import SimpleNamespace

import torch
from tqdm.auto import tqdm

from .data import encode_prompt, prompt_messages
from .defaults import DEFAULT_MODEL, resolve_model

BUILTIN_PROMPTS = "builtin"
BACKENDS = ("auto", "hf", "hf_continuous", "ctranslate2", "vllm")
PAGE_SIZE = 64  # tokens per block of the continuous backend's paged cache


@dataclass
class SamplingConfig:
    num_samples: int = 4
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {self.num_samples}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("temperature must be >= 0 and top_p in (0, 1]")

    def record(self) -> dict:
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
            "seed": self.seed,
        }


# ---------------------------------------------------------------------------------------------- prompts
def load_prompts(
    source: str = BUILTIN_PROMPTS,
    prompt_field: str | None = None,
    split: str = "train",
    dataset_config: str | None = None,
    limit: int | None = None,
) -> list[dict]:
    """Prompts as ``[{"prompt_id", "prompt" (messages), ...extra columns}]``.

    ``source`` is ``"builtin"`` (the project's prompt set with answer lengths from one word to long
    stories), a local ``.jsonl`` / ``.json`` / ``.txt`` / ``.parquet`` file, or a hub dataset id. The prompt column
    is ``prompt_field`` or the first of ``prompt``, ``messages``, ``question`` (GSM8K), ``instruction``. Other
    columns are kept, an ``images`` (or ``image``) column too: paths, or ``datasets`` Image values (PIL images).
    """
    if source == BUILTIN_PROMPTS:
        rows = _read_jsonl(resources.files("lenvm_rl").joinpath("assets/prompts.jsonl"))
        stem = "builtin"
    elif Path(source).is_file():
        path = Path(source)
        stem = path.stem
        if path.suffix == ".txt":
            rows = [{"prompt": line.strip()} for line in path.read_text().splitlines() if line.strip()]
        elif path.suffix == ".json":
            rows = json.loads(path.read_text())
        elif path.suffix == ".parquet":
            from datasets import Dataset

            rows = _dataset_rows(Dataset.from_parquet(str(path)), limit)
        else:
            rows = _read_jsonl(path)
    else:
        from datasets import load_dataset

        rows = _dataset_rows(load_dataset(source, dataset_config, split=split), limit)
        stem = source.replace("/", "_")
    prompts = []
    for i, row in enumerate(rows[:limit] if limit else rows):
        field = prompt_field or next((k for k in ("prompt", "messages", "question", "instruction") if k in row), None)
        if field is None or field not in row:
            looked = prompt_field or "prompt, messages, question, instruction"
            raise ValueError(
                f"{source} row {i} has no prompt column (looked for {looked}); name it with --prompt-field."
            )
        pid = str(row.get("id", row.get("prompt_id", f"{stem}-{i}")))
        extra = {k: v for k, v in row.items() if k not in (field, "id", "prompt_id")}
        prompts.append({**extra, "prompt_id": pid, "prompt": prompt_messages(row[field])})
    if not prompts:
        raise ValueError(f"{source} holds no prompts")
    if len({p["prompt_id"] for p in prompts}) != len(prompts):
        raise ValueError(f"{source} has duplicate prompt ids; ids are the resume key and must be unique.")
    return prompts


def _dataset_rows(dataset, limit: int | None) -> list[dict]:
    """The rows of a ``datasets.Dataset`` (only the first ``limit``: image columns decode row by row)."""
    return list(dataset.select(range(min(limit, len(dataset)))) if limit else dataset)


def _read_jsonl(path) -> list[dict]:
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


# ---------------------------------------------------------------------------------------------- resume
def read_done(output: Path, generator: str, sampling: SamplingConfig, prompts: list[dict] = ()) -> set[tuple[str, int]]:
    """(prompt_id, sample_index) pairs already in ``output``; refuses a file made with other settings, or one whose
    text prompt under an id of ``prompts`` differs from that prompt now (its answers would be to another question).

    A torn last line (the run was killed mid-write) is moved aside to ``<output>.torn`` and reported.
    """
    if not output.is_file():
        return set()
    done, good_lines, torn = set(), [], None
    text_now = {str(p["prompt_id"]): p["prompt"] for p in prompts if _is_text(p.get("prompt"))}
    lines = output.read_text().splitlines(keepends=True)
    for i, line in enumerate(lines):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                torn = line
                break
            raise ValueError(f"{output}:{i + 1} is not valid JSON; fix or remove that line before resuming.") from None
        if rec.get("generator") != generator or rec.get("sampling") != sampling.record():
            raise ValueError(
                f"{output} already holds rollouts from generator={rec.get('generator')!r} with sampling "
                f"{rec.get('sampling')}, but this run uses generator={generator!r} with {sampling.record()}. "
                "Mixing them would blur the length distribution; write to another --output."
            )
        now = text_now.get(str(rec["prompt_id"]))
        if now is not None and _is_text(rec.get("prompt")) and rec["prompt"] != now:
            raise ValueError(
                f"{output} holds rollouts of prompt {rec['prompt_id']!r} with another text ({rec['prompt']!r}, now "
                f"{now!r}); they answer another question. Write to another --output, or delete that file."
            )
        done.add((str(rec["prompt_id"]), int(rec["sample_index"])))
        good_lines.append(line)
    if torn is not None:
        Path(str(output) + ".torn").write_text(torn)
        output.write_text("".join(good_lines))
        print(f"[lenvm] {output}: moved a torn last line (interrupted write) to {output}.torn; resuming.")
    return done


def _is_text(prompt) -> bool:
    """A string, or chat messages whose every content is a string (prompts with images are not compared)."""
    if isinstance(prompt, str):
        return True
    return isinstance(prompt, list) and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in prompt)


# ---------------------------------------------------------------------------------------------- sampling
def generate_rollouts(
    prompts: list[dict],
    output: str | os.PathLike,
    model: str | None = None,
    sampling: SamplingConfig | None = None,
    batch_size: int = 16,
    backend: str = "hf",
    dtype: str = "auto",
    use_chat_template: bool = True,
    progress: bool = True,
    processor=None,
    engine_quantization: str = "float32",
    engine_distribution_check: str | None = None,
) -> Path:
    """Sample ``sampling.num_samples`` completions per prompt and append them to ``output`` (resumable).

    ``backend``: ``"hf"`` (padded ``generate`` batches, the reference), ``"hf_continuous"`` (transformers' continuous
    batching), ``"ctranslate2"`` (the CPU engine, :mod:`lenvm_rl.ct2_engine`; ``engine_quantization="int8"`` needs
    ``engine_distribution_check``), ``"vllm"`` (CUDA), or ``"auto"``: vLLM on CUDA when installed, the CPU engine
    on CPU when it can take the model, else ``"hf"``, with the reason printed.

    A vision-language generator (its config has a ``vision_config``) samples with its processor (``processor``,
    or ``AutoProcessor`` from ``model``); prompts with images need one. Images given as pixels are saved as PNG
    files under ``<output>.images/`` before anything is generated, and every prompt is checked against its images
    (one per image part) first."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    sampling = sampling or SamplingConfig()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    generator = model or DEFAULT_MODEL
    done = read_done(output, generator, sampling, prompts)
    todo = [(p, k) for p in prompts for k in range(sampling.num_samples) if (p["prompt_id"], k) not in done]
    if not todo:
        print(f"[lenvm] {output}: all {len(prompts) * sampling.num_samples} rollouts already there; nothing to do.")
        return output
    if done:
        print(f"[lenvm] {output}: resuming, {len(done)} rollouts done, {len(todo)} to go.")
    if backend == "vllm" and any(_has_images(p) for p, _ in todo):
        raise NotImplementedError("Prompts with images need --backend hf: the vLLM backend samples text prompts only.")
    todo = _with_image_refs(todo, Path(f"{output}.images"))
    if backend == "auto":
        backend = choose_backend(generator, processor is not None or any(_has_images(p) for p, _ in todo), dtype)
    if backend == "hf":
        _generate_hf(todo, output, generator, sampling, batch_size, dtype, use_chat_template, progress, processor)
    elif backend == "hf_continuous":
        if processor is not None or any(_has_images(p) for p, _ in todo):
            raise NotImplementedError("--backend hf_continuous samples text prompts only; use --backend hf for images.")
        _generate_hf_continuous(todo, output, generator, sampling, batch_size, dtype, use_chat_template, progress)
    elif backend == "ctranslate2":
        if processor is not None or any(_has_images(p) for p, _ in todo):
            raise NotImplementedError("--backend ctranslate2 samples text prompts only; use --backend hf for images.")
        _generate_ct2(
            todo, output, generator, sampling, batch_size, dtype, use_chat_template, progress, engine_quantization,
            engine_distribution_check,
        )  # fmt: skip
    else:
        _generate_vllm(todo, output, generator, sampling, dtype, use_chat_template)
    return output


def choose_backend(generator: str, has_images: bool, dtype: str = "auto") -> str:
    """What ``backend="auto"`` samples with, printing why when it is not the fast engine for this device."""
    if torch.cuda.is_available():
        try:
            import vllm  # noqa: F401
        except ImportError:
            print("[lenvm] backend auto: CUDA without vLLM installed; sampling with hf (pip install 'lenvm-rl[vllm]').")
            return "hf"
        if has_images:
            print("[lenvm] backend auto: prompts with images; sampling with hf (the vLLM backend takes text only).")
            return "hf"
        return "vllm"
    from . import ct2_engine

    if has_images:
        print("[lenvm] backend auto: prompts with images; sampling with hf (the CPU engine takes text only).")
        return "hf"
    if dtype not in ("auto", "float32"):
        print(f"[lenvm] backend auto: dtype {dtype} asked for; sampling with hf (the CPU engine samples float32).")
        return "hf"
    try:
        path = resolve_model(generator)
        ct2_engine.check_convertible(path)
        ct2_engine.generation_options(_generation_config(path))
    except ct2_engine.EngineUnavailable as e:
        print(f"[lenvm] backend auto: sampling with hf, not the CPU engine: {e}")
        return "hf"
    return "ctranslate2"


def _has_images(prompt: dict) -> bool:
    from .vlm import count_image_parts, record_images

    return bool(record_images(prompt) or count_image_parts(prompt["prompt"]))


def _with_image_refs(todo: list[tuple[dict, int]], images_dir: Path) -> list[tuple[dict, int]]:
    """``todo`` with every prompt as its records will carry it: a prompt with images gets its image parts in its
    messages and its ``images`` as references (:func:`lenvm_rl.vlm.store_image`), after a check that it has one
    image per image part; every column must be JSON. Raises before anything is generated."""
    from .vlm import check_prompt_images, record_images, store_image, with_image_parts

    ready: dict[str, dict] = {}
    for prompt, _ in todo:
        pid = prompt["prompt_id"]
        if pid in ready:
            continue
        if _has_images(prompt):
            images = record_images(prompt)
            messages = with_image_parts(prompt["prompt"], len(images))
            check_prompt_images(messages, images, f"prompt {pid!r}")
            extra = {key: v for key, v in prompt.items() if key not in ("image", "images", "prompt")}
            prompt = {**extra, "prompt": messages, "images": [store_image(x, images_dir) for x in images]}
        for key, value in prompt.items():
            try:
                json.dumps(value, ensure_ascii=False)
            except (TypeError, ValueError) as e:
                raise ValueError(
                    f"prompt {pid!r}: column {key!r} cannot be written to a JSON record ({e}). Images go "
                    "in an 'images' (or 'image') column; drop other columns that hold objects."
                ) from None
        ready[pid] = prompt
    return [(ready[p["prompt_id"]], k) for p, k in todo]


def _make_record(
    prompt: dict, k: int, ids: list[int], finished: bool, text: str, generator: str, sampling: SamplingConfig
) -> dict:
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


def rollout_summary(path: str | os.PathLike) -> dict:
    """Counts and length statistics of a rollouts file."""
    from .data import load_rollouts

    recs = load_rollouts(path)
    lengths = [r["num_tokens"] for r in recs if r["finish_reason"] == "stop"]
    trunc = sum(r["finish_reason"] == "length" for r in recs)
    return {
        "records": len(recs),
        "prompts": len({r["prompt_id"] for r in recs}),
        "truncated": trunc,
        "mean_length": sum(lengths) / max(len(lengths), 1),
        "max_length": max(lengths, default=0),
        "min_length": min(lengths, default=0),
    }


__all__ = [
    "BACKENDS",
    "SamplingConfig",
    "choose_backend",
    "load_prompts",
    "generate_rollouts",
    "read_done",
    "rollout_summary",
    "asdict",
]

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
import os
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import torch

from .data import prompt_messages
from .defaults import DEFAULT_MODEL, resolve_model
from .sampling_backends import _generate_ct2, _generate_hf, _generate_hf_continuous, _generate_vllm, _generation_config

BUILTIN_PROMPTS = "builtin"
BACKENDS = ("auto", "hf", "hf_continuous", "ctranslate2", "vllm")


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

"""Generating with a LenVM, as `lenvm generate`, `lenvm demo` and the evaluations do: load the critic and the
generator, run length-guided generation in batches, and judge each answer beside its length (the generator's own
NLL of it, rep-4). Importing it imports no torch, so `lenvm demo --help` stays fast."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_CRITIC = "lenvm_runs/quickstart/model"  # where `lenvm quickstart` saves its LenVM


def setup_threads() -> None:
    """All cores on CPU, unless OMP_NUM_THREADS says otherwise (e.g. to share the machine)."""
    import torch

    if not torch.cuda.is_available() and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(os.cpu_count() or 1)


def load_critic(path: str):
    from .critic import LengthCritic
    from .modeling import is_checkpoint_dir

    if not Path(path).exists() and not is_checkpoint_dir(path):
        hint = " Run `lenvm quickstart` first, or pass --critic DIR." if path == DEFAULT_CRITIC else ""
        raise FileNotFoundError(f"No LenVM checkpoint at {path}.{hint}")
    critic = LengthCritic.from_pretrained(path)
    if critic.tokenizer is None:
        raise ValueError(f"{path} has no tokenizer files; evaluations decode text, so save the tokenizer with it.")
    return critic


def load_generator(name: str | None, critic=None):
    """The generator (causal LM, eval mode) and its tokenizer; checked against the critic's vocabulary."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .defaults import resolve_model

    path = resolve_model(name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    if critic is not None:
        critic.check_tokenizer(tokenizer)
    return model, tokenizer


def guided(model, critic, tokenizer, prompts, batch_size: int, desc: str, **kwargs) -> list[dict]:
    """``generate_with_length`` over batches, with a progress bar."""
    from tqdm.auto import tqdm

    from .decoding import generate_with_length

    out = []
    for start in tqdm(range(0, len(prompts), batch_size), desc=desc, leave=False):
        out += generate_with_length(model, critic, prompts[start : start + batch_size], tokenizer=tokenizer, **kwargs)
    return out


def answer_nll(
    generator, prompt_ids: list[list[int]], completion_ids: list[list[int]], batch_size: int = 8, pad_token_id: int = 0
) -> list[float]:
    """Per answer, the generator's mean negative log-probability per token of ``completion_ids`` after
    ``prompt_ids``, under its plain distribution (temperature 1, no top-k / top-p): a quality signal beside length
    (higher = text the generator itself finds less likely). Append EOS to a completion whose EOS counts (a natural
    end); an empty completion gives NaN. Rows are left-padded with position ids from the mask, as ``generate``
    does, and only the completion positions' logits are computed."""
    import torch

    from .ends import left_padded

    with torch.no_grad():
        device = next(generator.parameters()).device
        out = []
        for start in range(0, len(prompt_ids), batch_size):
            prompts, completions = prompt_ids[start : start + batch_size], completion_ids[start : start + batch_size]
            rows = [list(p) + list(c) for p, c in zip(prompts, completions)]
            longest = max(map(len, completions))
            if longest == 0:
                out += [float("nan")] * len(rows)
                continue
            kw = left_padded(rows, pad_token_id, device)
            ids = kw["input_ids"]
            try:
                logits = generator(**kw, logits_to_keep=longest + 1).logits
            except TypeError:  # a model without logits_to_keep
                logits = generator(**kw).logits
            logits = logits[:, -(longest + 1) : -1].float()  # the predictions of the last `longest` tokens
            token_logp = torch.log_softmax(logits, -1).gather(-1, ids[:, -longest:, None])[..., 0]
            for i, c in enumerate(completions):
                out.append(float(-token_logp[i, longest - len(c) :].mean()) if len(c) else float("nan"))
        return out


def answers_nll(
    generator, tokenizer, prompts, records: list[dict], use_chat_template: bool = True, batch_size: int = 8
) -> list[float]:
    """:func:`answer_nll` of generated records (``token_ids``, ``end``): the prompts encoded as for generation,
    EOS counted for natural ends only (a forced EOS was the rule's choice, a capped row has none)."""
    from .data import encode_prompt

    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    prompt_ids = [encode_prompt(tokenizer, p, use_chat_template) for p in prompts]
    completions = [list(r["token_ids"]) + ([eos] if r["end"] == "natural" else []) for r in records]
    return answer_nll(generator, prompt_ids, completions, batch_size, pad)


REPEAT_N = 4  # rep-4, as in Welleck et al. (2019), "Neural text generation with unlikelihood training"


def repeated_ngram_share(token_ids, n: int = REPEAT_N) -> float | None:
    """The share of an answer's token n-grams that repeat an earlier one in the same answer (``1 - distinct /
    total``; 0 = no n-gram twice, near 1 = a loop); None when the answer has fewer than ``n`` tokens. A quality
    signal the NLL misses: a loop is *likely* text under the generator, so its NLL drops while it degenerates."""
    ids = list(token_ids)
    grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else None

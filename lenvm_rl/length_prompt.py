"""The budget in the prompt: the target stated in words the generator follows, for every guided mode.

An instruct model told the budget plans a short (or long) answer itself; the critic can then correct what is
left. ``length_prompt`` of :func:`~lenvm_rl.decoding.generate_with_length` (``--length_prompt`` of ``lenvm
generate``) takes:

    None / "none"   no budget in the prompt (the default)
    "default"       the mode's template below
    a template      any text with a ``{target}`` placeholder (and optionally ``{words}``)

The text is appended, after a space, to the last user message (a plain-string prompt is that message). Templates:

    equal      "Answer in about {target} tokens (roughly {words} words)."
    at_most    "Answer in at most {target} tokens (roughly {words} words)."
    at_least   "Answer in at least {target} tokens (roughly {words} words)."

Targets count generator tokens, which is what the rules measure, so the template states tokens; instruct models
have mostly seen budgets in words, so it adds the words they amount to, ``{words} = round(0.75 * target)`` (about
0.75 English words per token, the usual rule of thumb for BPE tokenizers; at least 1). ``tilt`` has no target and
cannot take a budget prompt. With the critic's guidance turned off (``guide=False``; ``lenvm generate --no_guide``)
the budget prompt with plain sampling is the "prompt only" combination, so four can be compared: plain, prompt
only, LenVM only, prompt + LenVM.
"""

from __future__ import annotations

import string

TEMPLATES = {
    "equal": "Answer in about {target} tokens (roughly {words} words).",
    "at_most": "Answer in at most {target} tokens (roughly {words} words).",
    "at_least": "Answer in at least {target} tokens (roughly {words} words).",
}
WORDS_PER_TOKEN = 0.75
PLACEHOLDERS = ("target", "words")


def words_for(target: int) -> int:
    return max(1, round(WORDS_PER_TOKEN * target))


def length_prompt_text(length_prompt: str | None, mode: str, target_tokens: int | None) -> str | None:
    """The sentence to add for this mode and target, or None for no budget prompt. A mode without a target, a
    template without ``{target}`` or with another placeholder is a ``ValueError`` (raised before any generation)."""
    if length_prompt is None or str(length_prompt).strip().lower() == "none":
        return None
    if mode not in TEMPLATES:
        raise ValueError(
            f"mode {mode!r} cannot take a budget prompt (length_prompt={length_prompt!r}): it has no target. Use "
            f"one of {', '.join(TEMPLATES)} with target_tokens, or length_prompt='none'."
        )
    if target_tokens is None or int(target_tokens) != target_tokens or target_tokens < 1:
        raise ValueError(f"a budget prompt needs target_tokens, a positive whole number, got {target_tokens!r}")
    template = TEMPLATES[mode] if length_prompt == "default" else str(length_prompt)
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as e:
        raise ValueError(
            f"length_prompt {template!r} is not a valid template ({e}); write braces as {{{{ }}}}"
        ) from None
    if "target" not in fields:
        raise ValueError(
            f"length_prompt {template!r} has no {{target}} placeholder: write where the target goes, e.g. "
            f"{TEMPLATES['equal']!r}, or pass 'default' (the mode's template) or 'none'"
        )
    if unknown := fields - set(PLACEHOLDERS):
        raise ValueError(
            f"length_prompt {template!r}: unknown placeholders {sorted(unknown)}; use {{target}}, {{words}}"
        )
    return template.format(target=int(target_tokens), words=words_for(int(target_tokens)))


def with_length_prompt(prompt, text: str | None):
    """``prompt`` (a string or chat messages) with ``text`` appended, after a space, to its last user message; the
    input is not modified. ``text`` None returns the prompt as it is."""
    if text is None:
        return prompt
    if isinstance(prompt, str):
        return f"{prompt} {text}"
    messages = [dict(m) for m in prompt]
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    if not users:
        raise ValueError("a budget prompt goes into the last user message, and this prompt has none")
    last = messages[users[-1]]
    if isinstance(last["content"], str):
        last["content"] = f"{last['content']} {text}"
    else:  # a list of parts (a vision-language prompt): one more text part
        last["content"] = [*last["content"], {"type": "text", "text": f" {text}"}]
    return messages

"""Prompts as the models see them: chat messages, rendered with the tokenizer's chat template (or as plain text).

Shared by the example builder (:mod:`lenvm_rl.data`), the vision-language path (:mod:`lenvm_rl.vlm`), prediction,
decoding and sampling, so every one of them encodes a prompt the same way.
"""

from __future__ import annotations


class ChatTemplateError(ValueError):
    """The tokenizer has no chat template and no fallback was chosen."""


def prompt_messages(prompt: str | list[dict]) -> list[dict]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def encode_prompt(tokenizer, prompt: str | list[dict], use_chat_template: bool = True) -> list[int]:
    """Prompt token ids ending right before the first completion token.

    With ``use_chat_template=False`` (or a tokenizer without one, when explicitly allowed) the message
    contents are joined with newlines and tokenized as plain text: the documented fallback for base models.
    """
    messages = prompt_messages(prompt)
    if use_chat_template:
        if not getattr(tokenizer, "chat_template", None):
            raise ChatTemplateError(
                f"The tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template. Use a chat model's "
                "tokenizer, set tokenizer.chat_template, or pass use_chat_template=False (CLI: --no-chat-template) "
                "to encode prompts as plain text (generator and LenVM must then both use plain text)."
            )
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)
    text = "\n".join(m["content"] for m in messages) + "\n"
    return tokenizer(text, add_special_tokens=True)["input_ids"]

"""LenVMs on vision-language backbones (Qwen2.5-VL, SmolVLM / Idefics3, and others loaded with
``AutoModelForImageTextToText``).

The value head reads the language model's last hidden states, exactly as for a text backbone; the backbone is
the multimodal body (vision tower + projector + language model, no LM head), so ``pixel_values``,
``image_grid_thw``, ``pixel_attention_mask`` and the like pass straight through ``LengthValueModel.forward``.
Image tokens are prompt tokens: they never carry value targets (only generated tokens do).

Positions. Qwen2.5-VL uses 3-D rotary positions (time, height, width) for image tokens; text after an image
continues from the largest position of the image plus one. The model computes them here from ``input_ids``
and ``image_grid_thw`` (``get_rope_index``) whenever no positions are given, never from a cached state, so
training, prediction and tree scoring agree. Idefics3 / SmolVLM use plain 1-D positions.

Prompts with images are chat messages whose ``content`` is a list of parts, ``{"type": "image"}`` and
``{"type": "text", "text": ...}``; the images themselves travel beside them (a path, a PIL image, or a
``datasets`` Image value ``{"bytes", "path"}``), one per image part, in order. The processor renders the prompt
(its chat template expands every image part into the model's image tokens). A rollout record carries them as
``images``: a list of paths (or ``image``: one path).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .prompts import ChatTemplateError, prompt_messages

# Keys of a processor's output (or a batch) that ``LengthValueModel.forward`` passes to a vision backbone.
VISION_KEYS = (
    "pixel_values",
    "image_grid_thw",
    "pixel_attention_mask",
    "image_sizes",
    "pixel_values_videos",
    "video_grid_thw",
    "second_per_grid_ts",
)
IGNORED_KEYS = ("mm_token_type_ids",)  # recomputed from input_ids (the positions never depend on a cached state)
DEFAULT_LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class VisionInputError(ValueError):
    """Images where the critic cannot read them, or image tokens without their images."""


class ProcessorMismatchError(ValueError):
    """A processor whose tokenizer or image tokens do not match the LenVM's backbone."""


class MissingVisionDependencyError(ImportError):
    """A processor needs a package that is not installed (Qwen2.5-VL's needs torchvision: the ``vlm`` extra)."""


VLM_EXTRA = "pip install 'lenvm-rl[vlm]'"


# ---------------------------------------------------------------------------------------------- configs
def is_vision_config(config) -> bool:
    return getattr(config, "vision_config", None) is not None


def text_hidden_size(config) -> int:
    """The language model's hidden size (a VLM config keeps it in ``text_config``)."""
    get = getattr(config, "get_text_config", None)
    text = get() if callable(get) else config
    return getattr(text, "hidden_size", None) or config.hidden_size


def image_token_id(config) -> int | None:
    for name in ("image_token_id", "image_token_index"):
        value = getattr(config, name, None)
        if value is not None:
            return int(value)
    return None


def is_processor(obj) -> bool:
    """A multimodal processor (tokenizer + image processor), as opposed to a plain tokenizer."""
    return obj is not None and getattr(obj, "image_processor", None) is not None and hasattr(obj, "tokenizer")


def tokenizer_of(obj):
    """The tokenizer inside a processor, or the tokenizer itself."""
    return obj.tokenizer if is_processor(obj) else obj


def _unwrap(backbone: nn.Module) -> nn.Module:
    return backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone


def names_vision_model(name: str) -> bool:
    """True when ``name`` (hub id or path) holds a vision-language config; False when it cannot be read."""
    from transformers import AutoConfig

    try:
        return is_vision_config(AutoConfig.from_pretrained(name))
    except (OSError, ValueError, KeyError):
        return False


def language_lora_targets(backbone: nn.Module, modules: Sequence[str] = DEFAULT_LORA_MODULES) -> str:
    """A peft ``target_modules`` regex that adapts the language tower only (never the vision tower)."""
    body = _unwrap(backbone)
    lm = body.get_decoder() if hasattr(body, "get_decoder") else None
    prefix = next((n for n, m in body.named_modules() if m is lm and n), None)
    if prefix is None:
        prefix = next(
            (
                n
                for n in ("language_model", "text_model", "model.language_model", "model.text_model")
                if _has_module(body, n)
            ),
            None,
        )
    if prefix is None:
        raise ValueError(
            f"Could not find the language model inside {type(body).__name__}; pass LoRA target_modules explicitly."
        )
    import re

    return "^" + re.escape(prefix) + r"\..*\.(" + "|".join(modules) + ")$"


def _has_module(body: nn.Module, name: str) -> bool:
    try:
        body.get_submodule(name)
        return True
    except AttributeError:
        return False


# ---------------------------------------------------------------------------------------------- forward
def vision_inputs(batch: dict) -> dict:
    """The vision keys of a batch or processor output that are set."""
    return {k: batch[k] for k in VISION_KEYS if k in batch and batch[k] is not None}


def prepare_vision_forward(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    position_ids: torch.Tensor | None,
    cache: Any,
    vision: dict,
) -> tuple[Any, dict]:
    """Check the vision inputs against the backbone and ``input_ids``; returns ``(position_ids, vision)``.

    A text-only backbone refuses images; a VLM refuses image tokens without ``pixel_values`` and the reverse
    (checked on the prefix only: with a cache the new tokens are generated ones). Qwen2.5-VL-style backbones get
    their 3-D positions here when the prefix has images."""
    vision = {k: v for k, v in vision.items() if k not in IGNORED_KEYS and v is not None}
    config = model.config
    if not is_vision_config(config):
        if vision:
            raise VisionInputError(
                f"This LenVM's backbone ({type(_unwrap(model.backbone)).__name__}) is text-only and cannot read "
                f"images (got {sorted(vision)}). Score the text alone, or train a LenVM on a vision-language "
                "backbone (e.g. Qwen/Qwen2.5-VL-3B-Instruct; recipes/lenvm/Qwen2.5-VL-3B-Instruct)."
            )
        return position_ids, vision
    if cache is None:
        token = image_token_id(config)
        n_tokens = int((input_ids == token).sum()) if token is not None else 0
        if n_tokens and "pixel_values" not in vision:
            raise VisionInputError(
                f"The input holds {n_tokens} image tokens but no pixel_values: a VLM prompt needs its images. "
                "Pass images= with the prompt (one per image part, in order), or the processor's full output "
                "(pixel_values, image_grid_thw, ...), not input_ids alone."
            )
        if "pixel_values" in vision and not n_tokens:
            raise VisionInputError(
                "pixel_values were given but the input holds no image token. Render the prompt with the processor "
                "and put an {'type': 'image'} part in the chat message for every image."
            )
        body = _unwrap(model.backbone)
        if (
            position_ids is None
            and hasattr(body, "get_rope_index")
            and ("image_grid_thw" in vision or "video_grid_thw" in vision)
        ):
            position_ids = rope_positions(body, input_ids, attention_mask, vision)
    return position_ids, vision


def rope_positions(
    body: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, vision: dict
) -> torch.Tensor:
    """Qwen2.5-VL's 3-D positions, (3, B, T), computed from the ids (stateless, unlike the model's own cache)."""
    config = body.config
    types = torch.zeros_like(input_ids, dtype=torch.int)
    types[input_ids == config.image_token_id] = 1
    video = getattr(config, "video_token_id", None)
    if video is not None:
        types[input_ids == video] = 2
    if attention_mask is not None and attention_mask.dim() != 2:
        attention_mask = None
    positions, _ = body.get_rope_index(
        input_ids,
        mm_token_type_ids=types,
        image_grid_thw=vision.get("image_grid_thw"),
        video_grid_thw=vision.get("video_grid_thw"),
        second_per_grid_ts=vision.get("second_per_grid_ts"),
        attention_mask=attention_mask,
    )
    return positions


def next_positions(position_ids: torch.Tensor) -> torch.Tensor:
    """(B,) position id of the token after a left-padded prefix whose positions are (B, T) or (3, B, T)."""
    last = position_ids[..., -1]
    return (last.amax(0) if position_ids.dim() == 3 else last) + 1


# ---------------------------------------------------------------------------------------------- images
def load_image(image):
    """A PIL RGB image from a path, a PIL image, or a ``datasets`` Image value (``{"bytes", "path"}``)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB") if image.mode != "RGB" else image
    if isinstance(image, dict):
        if image.get("bytes"):
            return Image.open(io.BytesIO(image["bytes"])).convert("RGB")
        image = image.get("path")
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(
                f"image {path} does not exist (rollout records keep images as paths; keep the "
                "files where the records point, or store them as a datasets Image column)."
            )
        with Image.open(path) as im:
            return im.convert("RGB")
    raise TypeError(
        f"cannot read an image from {type(image).__name__}; use a path, a PIL image or a datasets Image value"
    )


def store_image(image, folder: str | Path) -> str:
    """Keep an image for a JSON record: a path (or a ``datasets`` Image value holding only one) is returned as
    given, after checking that the file exists; a PIL image or image bytes are saved as a PNG in ``folder``, named
    by a digest of the pixels (the same image is saved once, and a rerun finds it), and the PNG's absolute path is
    returned. The PNG holds exactly the RGB pixels :func:`load_image` gives, so the records read the same image."""
    import hashlib
    import os

    if isinstance(image, dict) and image.get("path") and not image.get("bytes"):
        image = image["path"]
    if isinstance(image, (str, Path)):
        if not Path(image).is_file():
            raise FileNotFoundError(
                f"image {image} does not exist (a path is kept as given in the records, so it "
                "must be readable from here)."
            )
        return str(image)
    im = load_image(image)
    digest = hashlib.sha1(f"{im.width}x{im.height}:".encode() + im.tobytes()).hexdigest()[:20]
    folder = Path(folder)
    path = (folder / f"{digest}.png").resolve()
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        im.save(tmp, format="PNG")
        os.replace(tmp, path)  # never a half-written PNG under the final name
    return str(path)


def record_images(rec: dict) -> list:
    """The images of a prompt or rollout record: ``images`` (a list) or ``image`` (one), else []."""
    images = rec.get("images")
    if images is None:
        images = [] if rec.get("image") is None else [rec["image"]]
    return list(images) if isinstance(images, (list, tuple)) else [images]


def image_key(image) -> str:
    """A JSON-able key of an image (its path, or a digest of its bytes / pixels), to cache rendered prompts."""
    import hashlib

    if isinstance(image, (str, Path)):
        return str(image)
    if isinstance(image, dict):
        if image.get("path") and not image.get("bytes"):
            return str(image["path"])
        return "bytes:" + hashlib.sha1(image.get("bytes") or b"").hexdigest()
    return "pixels:" + hashlib.sha1(load_image(image).tobytes()).hexdigest()


def count_image_parts(messages) -> int:
    if isinstance(messages, str):
        return 0
    return sum(
        1
        for m in messages
        if isinstance(m.get("content"), list)
        for part in m["content"]
        if isinstance(part, dict) and part.get("type") == "image"
    )


def with_image_parts(prompt, n_images: int):
    """Chat messages for a prompt and its images: a string (or messages without image parts) gets
    ``n_images`` image parts before the first user text; messages that already have image parts are kept."""
    messages = prompt_messages(prompt)
    if not n_images or count_image_parts(messages):
        return messages
    out, done = [], False
    for m in messages:
        if not done and m.get("role") == "user":
            content = m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]
            m = {**m, "content": [{"type": "image"}] * n_images + list(content)}
            done = True
        out.append(m)
    return out


def check_prompt_images(messages, images: Sequence, where: str = "prompt") -> None:
    parts = count_image_parts(messages)
    if parts != len(images):
        what = "no images were given" if not images else f"{len(images)} images were given"
        raise VisionInputError(
            f"{where} has {parts} image part(s) ({{'type': 'image'}}) but {what}. Pass one image per image part, "
            "in order (images=[[...], ...] per prompt; a rollout record keeps them under 'images')."
        )


def _text_only(messages) -> list[dict]:
    """Messages whose list contents are joined text (for plain-text rendering without a chat template)."""
    return [
        {
            **m,
            "content": "".join(p.get("text", "") for p in m["content"])
            if isinstance(m["content"], list)
            else m["content"],
        }
        for m in messages
    ]


def render_prompts(
    processor, prompts: Sequence, images: Sequence[Sequence] | None = None, use_chat_template: bool = True
) -> dict:
    """Left-padded model inputs for prompts with images: ``input_ids``, ``attention_mask`` and the vision keys.

    ``images[i]`` lists prompt i's images (one per image part). A string prompt with images gets its image parts
    in front of its text. Without a chat template, only text prompts are allowed."""
    images = [
        list(x) if isinstance(x, (list, tuple)) else ([] if x is None else [x])
        for x in (images if images is not None else [[]] * len(prompts))
    ]
    if len(images) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(images)} image lists; give one list per prompt.")
    texts = []
    for i, (prompt, imgs) in enumerate(zip(prompts, images)):
        messages = with_image_parts(prompt, len(imgs))
        check_prompt_images(messages, imgs, f"prompt {i}")
        if use_chat_template:
            if not getattr(processor, "chat_template", None) and not getattr(
                processor.tokenizer, "chat_template", None
            ):
                raise ChatTemplateError(
                    "The processor has no chat template to render image prompts with; set "
                    "processor.chat_template (the VLM's own template)."
                )
            texts.append(processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
        else:
            if imgs:
                raise VisionInputError(
                    "use_chat_template=False renders plain text, which has no place for images; "
                    "image prompts need the processor's chat template."
                )
            texts.append("\n".join(m["content"] for m in _text_only(messages)) + "\n")
    tokenizer = processor.tokenizer
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        loaded = [[load_image(x) for x in imgs] for imgs in images]
        kwargs = {"images": loaded} if any(loaded) else {}
        enc = processor(text=texts, padding=True, return_tensors="pt", add_special_tokens=False, **kwargs)
    finally:
        tokenizer.padding_side = side
    return dict(enc)


def image_batch(processor, images_per_row: Sequence[Sequence]) -> dict:
    """The image processor's tensors for a batch whose row i has ``images_per_row[i]`` (in token order)."""
    loaded = [[load_image(x) for x in row] for row in images_per_row]
    if not any(loaded):
        return {}
    ip = processor.image_processor
    nested = type(ip).__name__.startswith(("Idefics3", "SmolVLM", "Idefics2"))
    out = ip(
        images=[row for row in loaded if row] if nested else [x for row in loaded for x in row], return_tensors="pt"
    )
    return {k: v for k, v in dict(out).items() if k in VISION_KEYS}


# ---------------------------------------------------------------------------------------------- data
def encode_vlm_prompt(processor, prompt, images: Sequence, use_chat_template: bool = True) -> list[int]:
    """Prompt ids with the image tokens expanded, as the processor renders them."""
    return render_prompts(processor, [prompt], [images], use_chat_template)["input_ids"][0].tolist()


def image_span_start(prompt_ids: Sequence[int], processor, config=None) -> int | None:
    """Index of the first image-related token of a prompt (a cut from the left must keep it and all after)."""
    ids = set(_image_related_ids(processor, config))
    return next((i for i, t in enumerate(prompt_ids) if t in ids), None)


def _image_related_ids(processor, config=None) -> list[int]:
    tok = processor.tokenizer
    out = []
    for name in (
        "image_token_id",
        "video_token_id",
        "fake_image_token_id",
        "global_image_token_id",
        "vision_start_token_id",
    ):
        value = getattr(processor, name, None)
        if value is None and config is not None:
            value = getattr(config, name, None)
        if isinstance(value, int):
            out.append(value)
    for token in ("<|vision_start|>", "<fake_token_around_image>", "<image>", "<|image_pad|>"):
        tid = tok.convert_tokens_to_ids(token)
        if isinstance(tid, int) and tid != tok.unk_token_id:
            out.append(tid)
    return out


# ---------------------------------------------------------------------------------------------- checks
def check_processor(model, processor) -> None:
    """Raise :class:`ProcessorMismatchError` when ``processor`` cannot feed this LenVM's backbone."""
    config = model.config
    if not is_processor(processor):
        raise ProcessorMismatchError(
            f"{type(processor).__name__} is not a multimodal processor (no image_processor); "
            "a VLM LenVM needs its processor: AutoProcessor.from_pretrained(<checkpoint>)."
        )
    if not is_vision_config(config):
        raise ProcessorMismatchError(
            f"This LenVM's backbone ({type(_unwrap(model.backbone)).__name__}) is text-only, so it has no use for the "
            f"processor {type(processor).__name__}; pass its tokenizer (or train a LenVM on a VLM backbone)."
        )
    expected = _processor_class_name(config)
    if expected and expected not in {c.__name__ for c in type(processor).__mro__}:
        raise ProcessorMismatchError(
            f"The processor is a {type(processor).__name__}, but this LenVM's backbone ({config.model_type}) takes a "
            f"{expected}: it renders image tokens another model does not read. Load the processor saved with the "
            "LenVM: AutoProcessor.from_pretrained(ckpt)."
        )
    vocab = config.get_text_config().vocab_size
    if len(processor.tokenizer) > vocab:
        raise ProcessorMismatchError(
            f"The processor's tokenizer has {len(processor.tokenizer)} tokens but the LenVM's embedding holds {vocab}: "
            "it belongs to another model. Load the processor saved with the LenVM: AutoProcessor.from_pretrained(ckpt)."
        )
    want, have = image_token_id(config), getattr(processor, "image_token_id", None)
    if want is not None and have is not None and int(have) != want:
        raise ProcessorMismatchError(
            f"The processor writes image token id {have} but the LenVM's backbone expects {want} "
            f"({type(processor).__name__} vs {type(_unwrap(model.backbone)).__name__}): the processor is for another "
            "model family. Load the processor saved with the LenVM: AutoProcessor.from_pretrained(ckpt)."
        )


def _processor_class_name(config) -> str | None:
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    name = PROCESSOR_MAPPING_NAMES.get(getattr(config, "model_type", None))
    return name if isinstance(name, str) else None


def load_processor(path: str | Path):
    """The processor saved beside a VLM checkpoint (``AutoProcessor``), or None when there is none."""
    path = Path(path)
    if not any((path / f).is_file() for f in ("processor_config.json", "preprocessor_config.json")):
        return None
    try:
        return auto_processor(path)
    except MissingVisionDependencyError:
        raise
    except (OSError, ValueError, ImportError, AttributeError) as e:
        raise ProcessorMismatchError(
            f"{path} holds a processor that could not be loaded ({e}); install what it "
            "needs or pass processor= explicitly."
        ) from e


def auto_processor(name: str | Path, **kwargs):
    """``AutoProcessor.from_pretrained(name)``; a processor that needs torchvision (Qwen2.5-VL's video processor)
    where it cannot be imported raises :class:`MissingVisionDependencyError` naming the ``vlm`` extra."""
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(str(name), **kwargs)
    except ImportError as e:
        if "torchvision" not in str(e).lower():
            raise
        raise MissingVisionDependencyError(
            f"The processor of {name} needs torchvision (Qwen2.5-VL's processor holds a video processor), which "
            f"is not installed or does not import beside this torch: {VLM_EXTRA} (or a torchvision build that "
            "matches your torch), or pass the processor explicitly (processor=)."
        ) from e

"""Tiny random-weight vision-language models and processors, built offline for the VLM tests.

Two families: Qwen2.5-VL (3-D rotary positions, image_grid_thw) and Idefics3 (the SmolVLM family: a SigLIP tower,
pixel_attention_mask, 1-D positions). Both read text with the embedded default's tokenizer (SmolLM2, which is
SmolVLM's own) plus the family's image tokens, and a small chat template that renders image parts.

The Qwen2.5-VL processor class insists on a video processor, which needs torchvision; this environment has none,
so ``TinyQwenProcessor`` is Qwen2_5_VLProcessor without the video part (images render exactly as in the real one).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers import (
    AutoTokenizer,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3Processor,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
)
from transformers.processing_utils import ProcessorMixin

from lenvm_rl.defaults import default_model_path

QWEN_TOKENS = ["<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>"]
IDEFICS_TOKENS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]

QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
IDEFICS_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] | capitalize }}:{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


class TinyQwenProcessor(Qwen2_5_VLProcessor):
    """Qwen2_5_VLProcessor for images only (its video processor needs torchvision)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


def _tokenizer(extra: list[str]):
    tok = AutoTokenizer.from_pretrained(default_model_path())
    tok.add_special_tokens({"additional_special_tokens": extra})
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def qwen_processor():
    from transformers import Qwen2VLImageProcessorPil

    tok = _tokenizer(QWEN_TOKENS)
    ip = Qwen2VLImageProcessorPil(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)
    return TinyQwenProcessor(image_processor=ip, tokenizer=tok, chat_template=QWEN_TEMPLATE)


def idefics3_processor():
    from transformers import Idefics3ImageProcessorPil

    tok = _tokenizer(IDEFICS_TOKENS)
    ip = Idefics3ImageProcessorPil(
        do_image_splitting=False, size={"longest_edge": 64}, max_image_size={"longest_edge": 64}
    )
    return Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=4, chat_template=IDEFICS_TEMPLATE)


def qwen_model(processor, seed: int = 0) -> Qwen2_5_VLForConditionalGeneration:
    torch.manual_seed(seed)
    ids = processor.tokenizer.convert_tokens_to_ids(QWEN_TOKENS)
    tok = processor.tokenizer
    cfg = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            rope_parameters={"rope_type": "default", "mrope_section": [2, 1, 1], "rope_theta": 10000.0},
        ),
        vision_config=dict(
            depth=1,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=32,
            fullatt_block_indexes=[0],
            window_size=56,
        ),
        image_token_id=ids[1],
        video_token_id=ids[3],
        vision_start_token_id=ids[0],
        vision_end_token_id=ids[2],
    )
    return Qwen2_5_VLForConditionalGeneration(cfg).eval()


def idefics3_model(processor, seed: int = 0) -> Idefics3ForConditionalGeneration:
    torch.manual_seed(seed)
    tok = processor.tokenizer
    cfg = Idefics3Config(
        text_config=dict(
            model_type="llama",
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=64,
            patch_size=16,
        ),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        scale_factor=2,
    )
    return Idefics3ForConditionalGeneration(cfg).eval()


FAMILIES = {"qwen2_5_vl": (qwen_processor, qwen_model), "idefics3": (idefics3_processor, idefics3_model)}


def make_family(name: str, seed: int = 0):
    """``(processor, ForConditionalGeneration model)`` of a tiny random VLM of the family ``name``."""
    make_processor, make_model = FAMILIES[name]
    processor = make_processor()
    return processor, make_model(processor, seed)


def make_image(seed: int = 0, size: tuple[int, int] = (56, 84)) -> Image.Image:
    """A random RGB image (height, width)."""
    rng = np.random.RandomState(seed)
    return Image.fromarray(rng.randint(0, 255, (*size, 3), dtype=np.uint8))


def save_image(path, seed: int = 0, size: tuple[int, int] = (56, 84)) -> str:
    make_image(seed, size).save(path)
    return str(path)


def image_message(text: str, n_images: int = 1) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": text}]}]

import copy

import pytest
import torch

from lenvm_rl.critic import LengthCritic, TokenizerMismatchError, left_pad
from lenvm_rl.data import encode_prompt
from lenvm_rl.modeling import LengthValueModel
from lenvm_rl.returns import value_to_remaining


@pytest.fixture
def critic(tiny_backbone, tokenizer):
    return LengthCritic(LengthValueModel(tiny_backbone, gamma=0.99), tokenizer, batch_size=2)


def test_values_are_batched_and_padding_independent(critic):
    rows = [[5, 6, 7, 8, 9], [10, 11, 12], [13, 14, 15, 16]]
    ids, mask = left_pad(rows, 2)
    v_left = critic.values(ids, mask)
    for i, r in enumerate(rows):
        alone = critic.values(torch.tensor([r]))
        assert torch.allclose(v_left[i, -len(r) :], alone[0], atol=1e-5)
        assert torch.all(v_left[i, : -len(r)] == 0)  # padded positions hold 0
    assert not any(p.requires_grad for p in critic.model.parameters())


def test_predict_length_inverts_the_boundary_value(critic, tokenizer):
    prompts = ["Write a haiku.", [{"role": "user", "content": "Say yes."}]]
    n = critic.predict_length(prompts)
    ids = encode_prompt(tokenizer, prompts[0])
    v0 = critic.values(torch.tensor([ids]))[0, -1]
    # Answer tokens, EOS not counted (docs/method.md): the steps to come less the EOS step.
    assert n[0].item() == pytest.approx(value_to_remaining(v0, 0.99).item() - 1, rel=1e-5)
    assert torch.allclose(critic.predict_length(prompt_ids=[ids]), n[:1])


def test_length_shift_is_minus_the_td_residual_with_a_terminal_eos(critic):
    eos = critic.tokenizer.eos_token_id
    ids = torch.tensor([[5, 6, 7, 8, eos, 0], [5, 6, 9, 8, 7, 3]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
    shift = critic.length_shift(ids, mask, prompt_lengths=[2, 3])
    v = critic.values(ids, mask).double()
    g, r = 0.99, -(1 - 0.99)
    # row 0: token at position 3 moves s_2 -> s_3; the EOS at position 4 leads to the terminal state (V = 0)
    assert shift[0, 3].item() == pytest.approx((v[0, 2] - r - g * v[0, 3]).item(), abs=1e-5)
    assert shift[0, 4].item() == pytest.approx((v[0, 3] - r).item(), abs=1e-5)
    assert torch.all(shift[0, :2] == 0) and shift[0, 5] == 0 and torch.all(shift[1, :3] == 0)


def test_check_tokenizer(critic, tokenizer):
    critic.check_tokenizer(tokenizer)
    other = copy.deepcopy(tokenizer)
    other.add_tokens(["<brand_new_token>"])
    with pytest.raises(TokenizerMismatchError, match="differs from the critic"):
        critic.check_tokenizer(other)


def test_critic_needs_a_gamma(tiny_backbone):
    with pytest.raises(ValueError, match="gamma"):
        LengthCritic(LengthValueModel(tiny_backbone))


@pytest.mark.slow  # two trainings
def test_the_training_prompt_format_is_saved_and_honoured(
    tiny_backbone, tokenizer, tiny_causal_dir, tmp_path, monkeypatch
):
    """A critic trained on plain-text prompts is fed plain-text prompts after loading, never chat-rendered ones."""
    import json
    import warnings

    from transformers import AutoModelForCausalLM

    from lenvm_rl import modeling
    from lenvm_rl.decoding import generate_with_length
    from lenvm_rl.trainer import LengthValueConfig, LengthValueTrainer

    ckpt = tmp_path / "plain"
    args = LengthValueConfig(output_dir=str(ckpt), gamma=0.99, use_chat_template=False, report_to=[], use_cpu=True)
    LengthValueTrainer(LengthValueModel(tiny_backbone), args, processing_class=tokenizer).save_model()
    config_file = ckpt / "lenvm_config.json"
    assert json.loads(config_file.read_text())["use_chat_template"] is False

    critic = LengthCritic.from_pretrained(ckpt, device="cpu")
    msgs = [{"role": "user", "content": "Write a haiku."}]
    plain = encode_prompt(tokenizer, msgs, use_chat_template=False)
    assert plain != encode_prompt(tokenizer, msgs)
    assert not critic.use_chat_template and critic._encode_prompts([msgs, "Write a haiku."]) == [plain, plain]
    torch.testing.assert_close(critic.predict_length([msgs]), critic.predict_length(prompt_ids=[plain]))
    # guided generation feeds the generator (and so the critic) the same plain prompt
    generator = AutoModelForCausalLM.from_pretrained(tiny_causal_dir).eval()
    seen, generate = [], generator.generate
    monkeypatch.setattr(generator, "generate", lambda **kw: seen.append(kw["input_ids"][0].tolist()) or generate(**kw))
    generate_with_length(generator, critic, [msgs], mode="tilt", beta=1.0, max_new_tokens=2)
    assert seen == [plain]

    # A checkpoint from before the format was saved keeps the chat template, and says so once.
    meta = json.loads(config_file.read_text())
    del meta["use_chat_template"]
    config_file.write_text(json.dumps(meta))
    monkeypatch.setattr(modeling, "_warned_no_prompt_format", False)
    with pytest.warns(UserWarning, match="use_chat_template"):
        old = LengthCritic.from_pretrained(ckpt, device="cpu")
    assert old.use_chat_template and old._encode_prompts([msgs]) == [encode_prompt(tokenizer, msgs)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LengthValueModel.from_pretrained(ckpt)  # not again


def test_a_backbone_only_lenvm_saves_its_generation_config_and_knows_every_eos(tmp_path, tokenizer):
    """The backbone (no LM head) has no generation config of its own; the LenVM records its base model's, so a
    critic loaded from the checkpoint ends answers on the same EOS ids as the policy (here two, like Qwen's)."""
    from transformers import LlamaForCausalLM

    from tests.conftest import tiny_config

    eos, other = tokenizer.eos_token_id, 7
    base = tmp_path / "base"
    causal = LlamaForCausalLM(tiny_config(len(tokenizer)))
    causal.generation_config.eos_token_id = [eos, other]
    causal.save_pretrained(base)
    tokenizer.save_pretrained(base)
    model = LengthValueModel.from_backbone(str(base), gamma=0.9)
    model.save_pretrained(tmp_path / "lenvm")
    tokenizer.save_pretrained(tmp_path / "lenvm")
    assert (tmp_path / "lenvm" / "generation_config.json").is_file()
    critic = LengthCritic.from_pretrained(tmp_path / "lenvm", device="cpu")
    assert critic.eos_token_ids == {eos, other}
    # ... and uses it: a completion ending on the other EOS is finished (its EOS state is terminal).
    prompt_ids, prompt_mask = left_pad([[5, 6]], 0)
    done = critic._terminated(torch.tensor([[9, other]]), torch.tensor([[1, 1]]))
    assert done.tolist() == [True]
    credit = critic.length_advantages(prompt_ids, prompt_mask, torch.tensor([[9, other]]), torch.tensor([[1, 1]]))
    v = critic.values(torch.tensor([[5, 6, 9, other]]))[0, 1:3].double()
    g = 0.9
    expected = torch.stack([-(1 - g**2) - v[0], -(1 - g) - v[1]])  # G_j - V(s_j), terminal after the EOS
    assert torch.allclose(credit[0], expected.float(), atol=1e-5)


def test_length_advantages_take_image_inputs_like_completion_values(critic):
    seen = {}

    def completion_values(*args, **vision):
        seen.update(vision)
        return torch.zeros(1, 3, dtype=torch.float64)

    critic.completion_values = completion_values
    pixels = torch.ones(1, 3)
    critic.length_advantages(
        torch.tensor([[5]]), torch.tensor([[1]]), torch.tensor([[6, 7]]), torch.tensor([[1, 1]]), pixel_values=pixels
    )
    assert seen["pixel_values"] is pixels

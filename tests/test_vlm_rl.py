"""A VLM LenVM in the rest of the stack: length-guided decoding of a VLM generator (the critic's tree scorer caches
the image tokens of the prompt) and LengthShapedGRPOTrainer with a VLM policy and a VLM critic."""

from __future__ import annotations

import pytest
from datasets import Dataset
from vlm_helpers import image_message, make_family, make_image

from lenvm_rl.critic import LengthCritic
from lenvm_rl.decoding import generate_with_length
from lenvm_rl.modeling import LengthValueModel
from lenvm_rl.rl import LengthShapedGRPOConfig, LengthShapedGRPOTrainer
from lenvm_rl.scoring import TreeScorer


class RecordingScorer(TreeScorer):
    """A TreeScorer that remembers what its cache was started on."""

    started = []

    def start(self, prompt_ids, attention_mask, **vision):
        RecordingScorer.started.append((prompt_ids.clone(), sorted(vision)))
        return super().start(prompt_ids, attention_mask, **vision)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "idefics3"])
def test_guided_decoding_with_images(family):
    processor, generator = make_family(family)
    _, critic_vlm = make_family(family, seed=1)
    critic = LengthCritic(LengthValueModel.from_backbone(critic_vlm, gamma=0.9), processor)
    RecordingScorer.started = []
    prompts = [image_message("Describe the image."), image_message("And this one?")]
    images = [[make_image(1)], [make_image(2, size=(84, 56))]]
    out = generate_with_length(
        generator,
        critic,
        prompts,
        mode="at_most",
        target_tokens=3,
        max_new_tokens=6,
        images=images,
        seed=0,
        scorer=RecordingScorer(critic.model),
    )
    assert len(out) == 2 and all(r["num_tokens"] <= 3 for r in out)
    ((prefix, keys),) = RecordingScorer.started
    assert "pixel_values" in keys
    assert (prefix == critic.model.config.image_token_id).sum() > 0  # the critic's cache holds the image tokens
    tilted = generate_with_length(
        generator, critic, prompts, mode="tilt", beta=2.0, max_new_tokens=4, images=images, seed=0
    )
    assert len(tilted) == 2


def test_guided_decoding_prompt_without_images_is_refused():
    processor, generator = make_family("qwen2_5_vl")
    critic = LengthCritic(LengthValueModel.from_backbone(generator, gamma=0.9), processor)
    with pytest.raises(ValueError, match="image part"):
        generate_with_length(generator, critic, [image_message("Describe.")], mode="tilt", beta=1.0, max_new_tokens=2)


def short_reward(completions, **kwargs):
    return [1.0 if len(str(c)) < 40 else 0.0 for c in completions]


class Recording(LengthShapedGRPOTrainer):
    seen = []

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        Recording.seen.append((out["advantages"].shape, out["completion_ids"].shape, "pixel_values" in out))
        return out


@pytest.mark.parametrize("family", ["qwen2_5_vl"])
def test_grpo_with_vlm_policy_and_vlm_critic(family, tmp_path):
    processor, policy = make_family(family)
    _, critic_vlm = make_family(family, seed=1)
    critic = LengthCritic(LengthValueModel.from_backbone(critic_vlm, gamma=0.95), processor)
    data = Dataset.from_list(
        [{"prompt": image_message(f"How many squares? {i}"), "image": make_image(i)} for i in range(4)]
    )
    args = LengthShapedGRPOConfig(
        output_dir=str(tmp_path / "grpo"),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=6,
        max_steps=1,
        use_cpu=True,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        learning_rate=1e-4,
        length_shaping="advantage",
    )
    Recording.seen = []
    trainer = Recording(
        model=policy,
        reward_funcs=short_reward,
        args=args,
        train_dataset=data,
        processing_class=processor,
        critic=critic,
    )
    trainer.train()
    assert Recording.seen and all(a == c and pix for a, c, pix in Recording.seen)
    logged = [h for h in trainer.state.log_history if "length/term_abs_mean" in h]
    assert logged and all(h["length/term_abs_mean"] > 0 for h in logged)


def test_grpo_vlm_critic_refuses_another_family_processor(tmp_path):
    q_processor, policy = make_family("qwen2_5_vl")
    i_processor, i_model = make_family("idefics3")
    critic = LengthCritic(LengthValueModel.from_backbone(i_model, gamma=0.95), i_processor)
    data = Dataset.from_list([{"prompt": image_message("Hi"), "image": make_image(0)}] * 4)
    args = LengthShapedGRPOConfig(
        output_dir=str(tmp_path / "grpo"),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=4,
        max_steps=1,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        length_shaping="advantage",
    )
    with pytest.raises(ValueError, match="processor"):
        LengthShapedGRPOTrainer(
            model=policy,
            reward_funcs=short_reward,
            args=args,
            train_dataset=data,
            processing_class=q_processor,
            critic=critic,
        )

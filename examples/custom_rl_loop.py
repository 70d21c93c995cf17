"""A minimal PPO-style loop that uses a frozen LenVM for per-token length advantages.

TRL 1.16 has no PPOTrainer; custom loops get the critic through ``LengthCritic.length_advantages`` (GAE of
the length residuals). Each iteration: sample a group of completions per prompt, score the task, normalise
it within the group, add a per-token length term, and take clipped policy-gradient steps. The length term is
the ``relative`` one of docs/rl.md (only correct answers, centred within their group, clipped); ``--mode
advantage`` adds ``coef *`` the raw credit instead (ungated: it also pays wrong, short answers).

    python examples/custom_rl_loop.py --critic lenvm_runs/quickstart/model            # the embedded default
    python examples/custom_rl_loop.py --critic CKPT --policy tiny-random --iterations 2  # seconds
"""

from __future__ import annotations

import argparse

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lenvm_rl import LengthCritic, correct_group_means, relative_length_term
from lenvm_rl.critic import left_pad
from lenvm_rl.data import encode_prompt
from lenvm_rl.defaults import resolve_model
from lenvm_rl.rl.tasks import addition_dataset, addition_reward


def token_logps(policy, ids, mask, n_prompt):
    """Log-probabilities of the completion tokens (positions n_prompt ..) under the policy, (B, T)."""
    logits = policy(input_ids=ids, attention_mask=mask).logits[:, n_prompt - 1 : -1].float()
    return torch.log_softmax(logits, -1).gather(-1, ids[:, n_prompt:, None])[..., 0]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--critic", required=True)
    p.add_argument("--policy", default=None, help="generator (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--prompts_per_iteration", type=int, default=2)
    p.add_argument("--group", type=int, default=4)
    p.add_argument("--max_new_tokens", type=int, default=48)
    p.add_argument("--mode", choices=("relative", "advantage"), default="relative")
    p.add_argument(
        "--coef",
        type=float,
        default=None,
        help="alpha of relative (1.0) or weight of advantage (0.1); > 0 favours shorter",
    )
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--clip", type=float, default=0.2)
    a = p.parse_args(argv)
    coef = a.coef if a.coef is not None else {"relative": 1.0, "advantage": 0.1}[a.mode]

    torch.manual_seed(0)
    name = resolve_model(a.policy)
    tokenizer = AutoTokenizer.from_pretrained(name)
    policy = AutoModelForCausalLM.from_pretrained(name)
    critic = LengthCritic.from_pretrained(a.critic)
    critic.check_tokenizer(tokenizer)  # the critic scores the policy's token ids
    optimizer = torch.optim.AdamW(policy.parameters(), lr=a.lr)
    data = addition_dataset(n=a.iterations * a.prompts_per_iteration)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    history = []
    for it in range(a.iterations):
        rows = data.select(range(it * a.prompts_per_iteration, (it + 1) * a.prompts_per_iteration))
        prompts = [r["prompt"] for r in rows for _ in range(a.group)]
        answers = [r["answer"] for r in rows for _ in range(a.group)]
        prompt_ids, prompt_mask = left_pad([encode_prompt(tokenizer, m) for m in prompts], pad)
        with torch.no_grad():
            out = policy.generate(
                input_ids=prompt_ids,
                attention_mask=prompt_mask,
                do_sample=True,
                max_new_tokens=a.max_new_tokens,
                pad_token_id=pad,
                eos_token_id=eos,
            )
        completion_ids = out[:, prompt_ids.shape[1] :]
        is_eos = completion_ids == eos
        ended = is_eos.any(-1)
        first_eos = torch.where(ended, is_eos.float().argmax(-1), completion_ids.shape[1] - 1)
        completion_mask = (torch.arange(completion_ids.shape[1])[None] <= first_eos[:, None]).long()
        texts = tokenizer.batch_decode(completion_ids * completion_mask, skip_special_tokens=True)

        # task advantage: reward normalised within each prompt's group (GRPO style)
        reward = torch.tensor(addition_reward(texts, answers)).view(-1, a.group)
        task_adv = ((reward - reward.mean(1, keepdim=True)) / (reward.std(1, keepdim=True) + 1e-4)).view(-1, 1)
        # length credit per token from the frozen critic (terminated rows end in EOS; others bootstrap)
        credit = critic.length_advantages(
            prompt_ids,
            prompt_mask,
            completion_ids,
            completion_mask,
            terminated=ended,
            lam=0.8 if a.mode == "relative" else 1.0,
        )
        credit = credit * completion_mask
        if a.mode == "relative":  # correct answers only, centred within their prompt group, clipped
            mu, gate = correct_group_means(credit.sum(-1), completion_mask.sum(-1), reward.view(-1) >= 0.5, a.group)
            length_adv = relative_length_term(credit, completion_mask, mu, gate, alpha=coef, clip=0.5)
        else:
            length_adv = coef * credit
        advantages = (task_adv + length_adv) * completion_mask

        ids = torch.cat([prompt_ids, completion_ids], 1)
        mask = torch.cat([prompt_mask, completion_mask], 1)
        with torch.no_grad():
            old = token_logps(policy, ids, mask, prompt_ids.shape[1])
        for _ in range(2):  # two clipped steps on the same samples
            ratio = (token_logps(policy, ids, mask, prompt_ids.shape[1]) - old).exp()
            surrogate = torch.minimum(ratio * advantages, ratio.clamp(1 - a.clip, 1 + a.clip) * advantages)
            loss = -(surrogate * completion_mask).sum() / completion_mask.sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        stats = {
            "iteration": it,
            "reward": reward.mean().item(),
            "tokens": completion_mask.sum(1).float().mean().item(),
            "length_adv_abs": (length_adv.abs() * completion_mask).sum().item() / completion_mask.sum().item(),
            "correct": int((reward > 0).sum()),
        }
        history.append(stats)
        print(stats)
    return history


if __name__ == "__main__":
    main()

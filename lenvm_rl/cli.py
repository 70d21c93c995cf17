"""The `lenvm` command: quickstart | rollouts | train | predict | generate | merge | grpo | eval (each with --help).

Every subcommand parses documented dataclasses with TRL's ``TrlParser``, as ``trl/scripts/*.py`` do: each field is
a flag (``--max_new_tokens``; the dashed ``--max-new-tokens`` is accepted too) and a key of a YAML file given with
``--config``, and its ``metadata={"help": ...}`` is its ``--help`` text. ``lenvm --help`` imports nothing heavy;
``lenvm SUB --help`` imports only TRL's parser (torch-free).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Literal

COMMANDS = {
    "quickstart": "sample, train and evaluate a LenVM on the embedded default model, offline",
    "rollouts": "sample completions to pretrain a LenVM on (JSONL, resumable)",
    "train": "train a LenVM from rollouts (--config recipe.yaml; YAML keys are config fields)",
    "predict": "predict the answer length of prompts with a trained LenVM",
    "generate": "generate with a length target (equal / at_most / at_least) or length tilting",
    "merge": "merge a LoRA LenVM checkpoint into a full checkpoint",
    "grpo": "GRPO with LenVM length shaping (--config recipe.yaml; TRL's GRPO keys plus the length fields)",
    "eval": "evaluations: length_prediction | lifebench | tradeoff | length_tokens | visualize (JSON, PNG, markdown)",
    "demo": "a local web page: predicted length, tokens tinted by length shift, length controls (extra: demo)",
}


from .args import make_parser, parse  # noqa: E402  (the parsing helpers of every command)
from .candidates import DEFAULT_MIN_P, FALLBACK_TEMPERATURE, FALLBACK_TOP_P  # noqa: E402  (torch-free)

# Sampling defaults of `rollouts`: the quickstart's. `generate` follows the critic's own rollouts' settings (recorded
# with it), these when it records none, so a critic is guided with the settings its training answers were sampled with.
TEMPERATURE, TOP_P = FALLBACK_TEMPERATURE, FALLBACK_TOP_P


# ------------------------------------------------------------------------------------------ quickstart
def quickstart(argv: list[str]) -> int:
    from .quickstart import main

    (cfg,) = parse(command_parser("quickstart"), argv)
    main(cfg)
    return 0


# ------------------------------------------------------------------------------------------ rollouts
@dataclass
class RolloutsArguments:
    """Arguments of `lenvm rollouts`."""

    output: str = field(metadata={"help": "JSONL file to write; appended to and resumed."})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Generator: hub id or path (default: the embedded SmolLM2-135M-Instruct)."}
    )
    prompts: str = field(
        default="builtin",
        metadata={
            "help": "'builtin', a .jsonl/.json/.txt/.parquet file, or a "
            "dataset id. An 'images' (or 'image') column of paths "
            "or datasets Images needs a vision-language --model_name_or_path."
        },
    )
    prompt_field: str | None = field(
        default=None, metadata={"help": "Prompt column (default: prompt / messages / question)."}
    )
    split: str = field(default="train", metadata={"help": "Dataset split, for a dataset id."})
    dataset_config: str | None = field(default=None, metadata={"help": "Dataset config name, for a dataset id."})
    limit: int | None = field(default=None, metadata={"help": "Use only the first N prompts."})
    num_generations: int = field(default=4, metadata={"help": "Completions per prompt."})
    max_new_tokens: int = field(
        default=512, metadata={"help": "Generation cap in tokens; longer completions are recorded as truncated."}
    )
    temperature: float = field(default=TEMPERATURE, metadata={"help": "Sampling temperature."})
    top_p: float = field(default=TOP_P, metadata={"help": "Nucleus sampling."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})
    generation_batch_size: int = field(default=64, metadata={"help": "Rows sampled at once."})
    backend: Literal["auto", "hf", "hf_continuous", "ctranslate2", "vllm"] = field(
        default="auto",
        metadata={
            "help": "Sampling backend: auto (vllm on CUDA when installed; on CPU the CTranslate2 engine when it "
            "takes the model, else hf, printing why), ctranslate2 (the CPU engine, text only; converts the model "
            "once into the cache), hf (padded generate batches, the reference), hf_continuous (transformers' "
            "continuous batching, text only) or vllm (CUDA)."
        },
    )
    engine_quantization: Literal["float32", "int8"] = field(
        default="float32",
        metadata={
            "help": "The CTranslate2 engine's weights: float32 (the model itself) or int8 (needs "
            "--engine_distribution_check: a slightly different model)."
        },
    )
    engine_distribution_check: str | None = field(
        default=None,
        metadata={
            "help": "JSON of `python -m evals.benchmarks.engine_distribution` showing an int8 engine samples the "
            "lengths float32 hf sampling does (KS p > 0.05 on >= 400 completions, mean gap within 5 percent)."
        },
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = field(
        default="auto",
        metadata={
            "help": "Generator dtype; auto: bfloat16 where the machine computes it natively "
            "(CUDA, AVX512-BF16 / AMX CPUs), else float32."
        },
    )
    use_chat_template: bool = field(
        default=True,
        metadata={
            "help": "Render prompts with the chat template; "
            "--no_use_chat_template (or --no-chat-template) "
            "encodes them as plain text (base models)."
        },
    )


def rollouts(argv: list[str]) -> int:
    (a,) = parse(command_parser("rollouts"), argv)

    from .rollouts import SamplingConfig, generate_rollouts, load_prompts, rollout_summary

    prompts = load_prompts(a.prompts, a.prompt_field, a.split, a.dataset_config, a.limit)
    sampling = SamplingConfig(a.num_generations, a.max_new_tokens, a.temperature, a.top_p, a.seed)
    out = generate_rollouts(
        prompts,
        a.output,
        a.model_name_or_path,
        sampling,
        a.generation_batch_size,
        a.backend,
        a.dtype,
        use_chat_template=a.use_chat_template,
        engine_quantization=a.engine_quantization,
        engine_distribution_check=a.engine_distribution_check,
    )
    s = rollout_summary(out)
    print(
        f"[lenvm] {out}: {s['records']} rollouts over {s['prompts']} prompts; {s['truncated']} truncated; "
        f"finished lengths {s['min_length']}-{s['max_length']} tokens (mean {s['mean_length']:.1f})"
    )
    return 0


# ------------------------------------------------------------------------------------------ train
@dataclass
class TrainScriptArguments:
    """Data arguments of `lenvm train`."""

    rollouts: str = field(default=None, metadata={"help": "Rollouts JSONL file from `lenvm rollouts`."})
    eval_rollouts: str | None = field(default=None, metadata={"help": "Held-out rollouts JSONL (optional)."})
    eval_share: float = field(
        default=0.0, metadata={"help": "Share of prompts held out for evaluation when no eval_rollouts are given."}
    )


def train(argv: list[str]) -> int:
    from .launch import already_launched, relaunch, split_launch_args

    parser = command_parser("train")
    script_args, training_args, model_args, remaining = parse(parser, argv, return_remaining_strings=True)
    launch, unknown = split_launch_args(remaining)
    if unknown:
        parser.error(f"unknown arguments: {unknown}")
    if launch and not already_launched():
        return relaunch("train", argv, launch)
    run_train(script_args, training_args, model_args)
    return 0


def run_train(script_args: TrainScriptArguments, training_args, model_args) -> None:
    from transformers import AutoTokenizer
    from trl import get_peft_config

    from .candidates import rollout_sampling
    from .data import build_dataset, load_rollouts, split_by_prompt
    from .defaults import resolve_model
    from .modeling import LengthValueModel, backbone_load_kwargs, ensure_writable_output
    from .trainer import LengthValueTrainer

    if not script_args.rollouts:
        raise SystemExit("lenvm train needs rollouts: --rollouts FILE (or `rollouts:` in the recipe).")
    if not training_args.resume_from_checkpoint:
        ensure_writable_output(training_args.output_dir, training_args.overwrite_output_dir)  # before any work
    name = resolve_model(model_args.model_name_or_path)
    from .vlm import names_vision_model

    if names_vision_model(name):  # a VLM backbone: its processor renders image prompts and is saved with the LenVM
        from .vlm import auto_processor

        tokenizer = auto_processor(name, revision=model_args.model_revision)
    else:
        tokenizer = AutoTokenizer.from_pretrained(name, revision=model_args.model_revision)
    records = load_rollouts(script_args.rollouts)
    if script_args.eval_rollouts:
        eval_records = load_rollouts(script_args.eval_rollouts)
    else:
        records, eval_records = split_by_prompt(records, script_args.eval_share, training_args.seed)
    kw = dict(
        max_length=training_args.max_length,
        use_chat_template=training_args.use_chat_template,
        truncated=training_args.truncated,
    )
    train_ds, stats = build_dataset(records, tokenizer, **kw)
    print(f"[lenvm] train data: {stats.summary()}")
    eval_ds = None
    if eval_records:
        eval_ds, eval_stats = build_dataset(eval_records, tokenizer, **kw)
        print(f"[lenvm] eval data: {eval_stats.summary()}")
    model = LengthValueModel.from_backbone(name, **backbone_load_kwargs(model_args))
    model.rollout_sampling = rollout_sampling(records)  # saved with it: guided decoding's candidates follow it
    trainer = LengthValueTrainer(
        model,
        training_args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    print(f"[lenvm] gamma = {trainer.gamma:.6f}")
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    print(f"[lenvm] trained LenVM saved to {training_args.output_dir}")
    if eval_ds is not None:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)


# ------------------------------------------------------------------------------------------ predict
@dataclass
class PredictArguments:
    """Arguments of `lenvm predict`."""

    critic: str = field(metadata={"help": "LenVM checkpoint dir."})
    prompt: list[str] = field(
        default_factory=list, metadata={"help": "User prompts: --prompt A B, or --prompt A --prompt B."}
    )
    prompts_file: str | None = field(default=None, metadata={"help": "One prompt per line, or a prompts JSONL."})
    gamma: float | None = field(default=None, metadata={"help": "Only for checkpoints without lenvm_config.json."})
    dtype: Literal["bfloat16", "float16", "float32"] | None = field(
        default=None, metadata={"help": "Critic dtype (default: the checkpoint's)."}
    )


def predict(argv: list[str]) -> int:
    parser = command_parser("predict")
    (a,) = parse(parser, argv)

    from .critic import LengthCritic
    from .rollouts import load_prompts

    prompts = [[{"role": "user", "content": x}] for x in a.prompt]
    if a.prompts_file:
        prompts += [r["prompt"] for r in load_prompts(a.prompts_file)]
    if not prompts:
        parser.error("give at least one --prompt or a --prompts_file")
    critic = LengthCritic.from_pretrained(a.critic, gamma=a.gamma, dtype=a.dtype)
    for msgs, n in zip(prompts, critic.predict_length(prompts).tolist()):
        print(f"{n:8.1f} tokens  {msgs[-1]['content'][:100]!r}")
    return 0


# ------------------------------------------------------------------------------------------ generate
@dataclass
class GenerateArguments:
    """Arguments of `lenvm generate`."""

    critic: str = field(metadata={"help": "LenVM checkpoint dir."})
    prompt: list[str] = field(metadata={"help": "User prompts: --prompt A B, or --prompt A --prompt B."})
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Generator (default: the embedded SmolLM2-135M-Instruct); its vocabulary must match the critic's."
        },
    )
    mode: Literal["equal", "at_most", "at_least", "tilt"] = field(
        default="equal", metadata={"help": "Length target kind, or tilt (length tilting with --beta)."}
    )
    target_tokens: int | None = field(default=None, metadata={"help": "Target in generator tokens, EOS not counted."})
    beta: float | None = field(default=None, metadata={"help": "Tilt strength; > 0 shortens, < 0 lengthens."})
    rule: Literal["soft", "extreme"] = field(
        default="soft", metadata={"help": "at_most / at_least rules: ours (soft) or the reference code's (extreme)."}
    )
    max_new_tokens: int = field(default=512, metadata={"help": "The generation cap."})
    overshoot: int | None = field(
        default=None,
        metadata={"help": "Equal mode: hard stop at target + overshoot tokens (default max(4, 10%% of the target))."},
    )
    temperature: float | None = field(
        default=None,
        metadata={
            "help": f"Sampling temperature of the candidates (default: the critic's rollouts', recorded with it; "
            f"{TEMPERATURE} when it records none)."
        },
    )
    top_k: int | None = field(default=None, metadata={"help": "Candidates per step (default 15; 50 for tilt)."})
    top_p: float | None = field(
        default=None,
        metadata={"help": f"Nucleus sampling over the candidates (default: the critic's rollouts'; else {TOP_P})."},
    )
    min_p: float | None = field(
        default=None,
        metadata={
            "help": f"Floor in [0, 1): a candidate below min_p x the most probable one is never chosen by a rule "
            f"(default {DEFAULT_MIN_P}; 0 = none)."
        },
    )
    length_prompt: str = field(
        default="none",
        metadata={
            "help": "The budget in the prompt, added to the last user message: none, default (the mode's template, "
            "e.g. 'Answer in about {target} tokens (roughly {words} words).') or a template with {target}."
        },
    )
    guide: bool = field(
        default=True,
        metadata={
            "help": "Guide with the critic and the stop rules; --no_guide samples plainly with the same settings "
            "(with --length_prompt: the budget prompt alone)."
        },
    )
    trust_region: float | None = field(
        default=None,
        metadata={
            "help": "KL budget per step in nats: each step's rule stays within KL(q || p) <= this of the "
            "generator's candidates (default off; hard stops are outside it)."
        },
    )
    greedy: bool = field(default=False, metadata={"help": "Most probable allowed candidate instead of sampling."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})
    value_tolerance: float | None = field(
        default=None,
        metadata={
            "help": "rho: sample candidates by probability "
            "times exp(-|V - v*| / tau), tau set so a "
            "candidate rho x the remaining tokens off "
            "weighs 1/e (default 0.1; 0 = nearest)."
        },
    )
    gamma: float | None = field(default=None, metadata={"help": "Only for checkpoints without lenvm_config.json."})


def generate(argv: list[str]) -> int:
    (a,) = parse(command_parser("generate"), argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .candidates import candidate_settings, check_min_p
    from .critic import LengthCritic
    from .decoding import check_request, generate_with_length
    from .defaults import resolve_model
    from .generation import answers_nll, repeated_ngram_share
    from .length_prompt import length_prompt_text
    from .trust_region import check_trust_region

    # every check that needs no model comes before loading anything
    check_request(a.mode, a.target_tokens, a.beta, a.max_new_tokens, a.rule)
    check_min_p(a.min_p)
    check_trust_region(a.trust_region)
    budget = length_prompt_text(a.length_prompt, a.mode, a.target_tokens)
    name = resolve_model(a.model_name_or_path)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(name).to(device).eval()
    critic = LengthCritic.from_pretrained(a.critic, gamma=a.gamma, device=device)
    tokenizer = AutoTokenizer.from_pretrained(name)
    settings = candidate_settings(critic, a.temperature, a.top_p, a.min_p)
    guided = "the critic and the stop rules" if a.guide else "none (plain sampling)"
    print(
        f"[lenvm] candidates: {settings.describe()}{'; greedy' if a.greedy else ''}\n"
        f"[lenvm] guidance: {guided}; budget in the prompt: {budget or 'none'}; "
        f"trust region: {'off' if a.trust_region is None else f'KL <= {a.trust_region:g} nats per step'}"
    )
    results = generate_with_length(
        model,
        critic,
        a.prompt,
        tokenizer=tokenizer,
        mode=a.mode,
        target_tokens=a.target_tokens,
        beta=a.beta,
        max_new_tokens=a.max_new_tokens,
        do_sample=not a.greedy,
        temperature=settings.temperature,
        top_k=a.top_k,
        top_p=settings.top_p,
        min_p=settings.min_p,
        rule=a.rule,
        overshoot=a.overshoot,
        seed=a.seed,
        value_tolerance=a.value_tolerance,
        length_prompt=a.length_prompt,
        trust_region=a.trust_region,
        guide=a.guide,
    )
    # Quality beside length: the generator's own mean NLL per token of what it wrote (higher = less likely text),
    # and rep-4, the share of its token 4-grams that repeat (a loop is likely text: its NLL looks good).
    from .length_prompt import with_length_prompt

    asked = [with_length_prompt(p, budget) for p in a.prompt]  # the prompts as the generator saw them
    nll = answers_nll(model, tokenizer, asked, results, use_chat_template=critic.use_chat_template)
    for prompt, r, x in zip(a.prompt, results, nll):  # end: natural (EOS sampled) | forced (by the rule) | cap
        rep = repeated_ngram_share(r["token_ids"])
        quality = f"mean NLL {x:.2f}, rep-4 {'-' if rep is None else f'{rep:.2f}'}"
        print(f"### {prompt}\n{r['text']}\n[{r['num_tokens']} tokens, end: {r['end']}, {quality}]\n")
    return 0


# ------------------------------------------------------------------------------------------ grpo
def grpo(argv: list[str]) -> int:
    from .launch import already_launched, relaunch, split_launch_args

    parser, parsed, remaining = parse_grpo(argv)
    launch, unknown = split_launch_args(remaining)
    if unknown:
        parser.error(f"unknown arguments: {unknown}")
    if launch and not already_launched():
        return relaunch("grpo", argv, launch)
    from .grpo_script import run_grpo

    run_grpo(*parsed)
    return 0


def parse_grpo(argv: list[str]):
    """(parser, [script, training, model, dataset, reward arguments], remaining strings) of `lenvm grpo`. ``bf16`` defaults
    to :func:`~lenvm_rl.defaults.native_bf16`, not TRL's True: emulated bf16 (an AVX2 CPU) runs about 3x slower."""
    from . import defaults

    parser = command_parser("grpo")
    parser.set_defaults(bf16=defaults.native_bf16())  # a recipe's or a flag's bf16 still wins
    *parsed, remaining = parse(parser, argv, return_remaining_strings=True)
    return parser, parsed, remaining


# ------------------------------------------------------------------------------------------ merge
@dataclass
class MergeArguments:
    """Arguments of `lenvm merge`."""

    checkpoint: str = field(metadata={"help": "LoRA LenVM checkpoint (adapter + value head)."})
    output_dir: str = field(metadata={"help": "Where to write the merged full checkpoint."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace an existing checkpoint there."})


def merge(argv: list[str]) -> int:
    (a,) = parse(command_parser("merge"), argv)

    from .modeling import merge_lora

    print(f"[lenvm] merged checkpoint written to {merge_lora(a.checkpoint, a.output_dir, a.overwrite_output_dir)}")
    return 0


# ------------------------------------------------------------------------------------------ eval
def evaluate(argv: list[str]) -> int:
    import importlib

    from .evaluation import EVALS

    if not argv or argv[0] not in EVALS:
        return menu(argv, "usage: lenvm eval NAME [--help] ...", EVALS, "evaluation")
    importlib.import_module(f".evaluation.{argv[0]}", __package__).main(argv[1:])
    return 0


def menu(argv: list[str], usage: str, choices: dict[str, str], kind: str) -> int:
    """Print the usage line and the choices; exit status 2 when ``argv[0]`` names an unknown one."""
    print(usage + "\n")
    width = max(map(len, choices)) + 2
    for name, what in choices.items():
        print(f"  {name:{width}s} {what}")
    if argv and argv[0] not in ("-h", "--help"):
        print(f"\nunknown {kind} {argv[0]!r}")
        return 2
    return 0


# ------------------------------------------------------------------------------------------ parsers
def argument_types(command: str) -> list[type]:
    """The dataclasses `lenvm COMMAND` parses, in order (``eval NAME`` for an evaluation); docs/cli.md is generated
    from them (``python -m lenvm_rl.cli_docs``)."""
    if command.startswith("eval "):
        import importlib

        from .evaluation.common import EvalArguments

        module = importlib.import_module(f".evaluation.{command.split()[1]}", __package__)
        return [
            v
            for v in vars(module).values()
            if isinstance(v, type) and issubclass(v, EvalArguments) and v.__module__ == module.__name__
        ]
    if command in ("train", "grpo"):
        from trl import DatasetMixtureConfig, ModelConfig
        from trl.scripts.grpo import GRPOScriptArguments

        from .rl.config import LengthShapedGRPOConfig
        from .rl.reward_config import LengthRewardConfig
        from .trainer import LengthValueConfig

        if command == "train":
            return [TrainScriptArguments, LengthValueConfig, ModelConfig]
        return [GRPOScriptArguments, LengthShapedGRPOConfig, ModelConfig, DatasetMixtureConfig, LengthRewardConfig]
    if command == "quickstart":
        from .quickstart import QuickstartConfig

        return [QuickstartConfig]
    if command == "demo":
        from .demo import DemoArguments

        return [DemoArguments]
    own = {
        "rollouts": RolloutsArguments,
        "predict": PredictArguments,
        "generate": GenerateArguments,
        "merge": MergeArguments,
    }
    if command not in own:
        raise ValueError(f"unknown command {command!r}")
    return [own[command]]


def command_parser(command: str):
    """TRL's parser of `lenvm COMMAND` over :func:`argument_types` (with every spelling of :data:`args.SPELLINGS`)."""
    return make_parser(argument_types(command), f"lenvm {command}", COMMANDS.get(command))


HANDLERS = {
    "quickstart": quickstart,
    "rollouts": rollouts,
    "train": train,
    "predict": predict,
    "generate": generate,
    "merge": merge,
    "grpo": grpo,
    "eval": evaluate,
    "demo": lambda argv: __import__("lenvm_rl.demo", fromlist=["main"]).main(argv),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in HANDLERS:
        return menu(argv, "usage: lenvm {" + ",".join(HANDLERS) + "} ...", COMMANDS, "command")
    return HANDLERS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())

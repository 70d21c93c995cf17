"""LengthValueConfig / LengthValueTrainer: value pretraining as a ``transformers.Trainer``.

The only thing that differs from a plain ``Trainer`` is the loss (and the checkpoint layout it saves):

    loss = sum over trained tokens of the global batch (V(s_t) - G_t)^2 / (number of those tokens)

where "global batch" means every gradient-accumulation micro-batch on every process. Censored examples
(completions cut at ``max_new_tokens``, see :mod:`lenvm_rl.data`) add a one-sided term at each of their trained
positions: with a lower bound ``m`` on the remaining tokens, ``relu(V(s_t) - (-(1 - gamma ** m))) ** 2``, zero
while the bound holds and pushing V only down; they count as trained tokens of the mean. ``Trainer`` already
counts the non-ignored ``labels`` across micro-batches and processes (``num_items_in_batch``); we divide
by that count and undo DDP's gradient averaging, so the loss is a token mean no matter how the batch is
split. A sequence mean would reweight tokens by 1 / L, which depends on the future and biases targets.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import EvalPrediction, Trainer, TrainingArguments

from .data import IGNORE_INDEX, LengthValueCollator, VisionLengthValueCollator, completion_lengths
from .layers import freeze_lower_layers
from .modeling import (
    ADAPTER_CONFIG_FILE,
    VALUE_HEAD_FILE,
    LengthValueModel,
    ensure_writable_output,
)
from .packing import TRUNK_KEY, PaddingFreeCollator
from .returns import check_gamma, gamma_from_lengths, remaining_to_value, value_to_remaining
from .trunk import TrunkFeatureDataset, TrunkPaddedCollator, example_input_ids, freeze_trunk, trunk_features
from .vlm import is_processor, language_lora_targets, vision_inputs

ONLINE_FRACTIONS = (0.0, 0.25, 0.5, 0.75)


@dataclass
class LengthValueConfig(TrainingArguments):
    r"""
    Configuration for [`LengthValueTrainer`]: every ``TrainingArguments`` field plus the ones below.

    Parameters:
        > Value targets

        gamma (`str` or `float`, *optional*, defaults to `"auto"`):
            Discount of the length return `G_t = -(1 - gamma ** n_t)`. `"auto"` picks
            `gamma = 0.01 ** (1 / L99)` from the training completions' `gamma_quantile` length, so a
            completion of that length has 99 % of its return mass inside the horizon. The paper uses 0.997 for
            Qwen2.5 (answers up to ~1.5k tokens) and 0.9998 for long chain-of-thought. Saved with the checkpoint.
        gamma_quantile (`float`, *optional*, defaults to `0.99`):
            Length quantile used by `gamma="auto"`.
        loss (`str`, *optional*, defaults to `"mse"`):
            Regression loss on values; `"mse"` (token-mean squared error, the paper's) is the only one.

        > Data

        truncated (`str`, *optional*, defaults to `"censor"`):
            What completions cut at `max_new_tokens` (no EOS) contribute. `"censor"`: at a cut row's state with
            `k` generated tokens after it, at least `k + 1` tokens were still to come, so the loss adds the hinge
            `relu(V_t + 1 - gamma ** (k + 1)) ** 2`: zero when `V_t <= -(1 - gamma ** (k + 1))`, otherwise it
            pushes `V_t` down only. `"drop"`: ignore them (the old behaviour; it biases targets toward short
            answers whenever the cap cuts some). Examples come from `lenvm_rl.data.build_dataset`, whose
            `truncated` decides whether cut rows are kept at all; with `"drop"` here, kept ones are ignored.
        max_length (`int` or `None`, *optional*, defaults to `1024`):
            Longest tokenized prompt + completion. Longer examples lose prompt tokens from the left, then
            completion tokens from the right; targets stay exact either way (they count true remaining tokens).
        use_chat_template (`bool`, *optional*, defaults to `True`):
            Render prompts with the LenVM tokenizer's chat template (the generator's prompt format). Saved
            with the checkpoint: prediction, guided decoding and the evaluations encode prompts the same way.

        > Model

        freeze_layers (`int`, *optional*, defaults to `0`):
            Freeze the token embeddings and the lowest `freeze_layers` transformer layers of the backbone (full
            fine-tuning only; 0 trains everything). Backpropagation then stops at the first trainable layer, so
            a step costs about `1 + 2 * (L - freeze_layers) / L` forward passes instead of 3: the cheap way to fit
            a critic on a CPU (`evals/benchmarks/train_throughput.py --arms lenvm lenvm_frozen` measures it).
        trunk_layers (`int` or `None`, *optional*, defaults to `None`):
            Trunk features: freeze the embeddings and the lowest `trunk_layers` layers, compute their output for
            every training example once (a batched no-grad pass at the start of `train()`), and train only the layers
            above and the head on those cached states: an epoch costs about `3 * (L - trunk_layers) / L` forward
            passes (forward and backward of the upper layers, `L` layers in all) instead of 3, plus
            `trunk_layers / L` once. `None` or `0`: full fine-tuning (the trunk would be the embeddings alone). The
            number of layers of the backbone: a head on the frozen model's own final states (after its final norm,
            which stays frozen too). The saved checkpoint is an ordinary LenVM checkpoint (all layers, the lower ones
            at the backbone's weights); evaluation runs the model end to end. Full fine-tuning of a text backbone
            only (not with `peft_config`, `freeze_layers`, DeepSpeed or FSDP). See `lenvm_rl.trunk`.
        trunk_cache_dir (`str` or `None`, *optional*, defaults to `None`):
            Directory where trunk features are saved (safetensors) and looked up, keyed by the frozen weights,
            `trunk_layers`, the tokenized examples and the precision: a later run on the same data reuses them, a
            changed backbone or dataset gets a new file. `None`: kept in memory only.
        trunk_cache_dtype (`str`, *optional*, defaults to `"bfloat16"`):
            Storage precision of the trunk features: `"bfloat16"` (float32's range, so the large activations of a
            residual stream never overflow), `"float16"` (3 more mantissa bits; an overflow is an error) or
            `"float32"` (exact, twice the memory).
        padding_free (`bool`, *optional*, defaults to `False`):
            Pack each training micro-batch's sequences into rows of at most `max_length` tokens, position ids
            restarting at 0 for each, instead of padding every row to the longest (`lenvm_rl.packing`). Same loss,
            fewer computed tokens. Training only; evaluation batches stay padded. Text backbones only.

        > Output

        overwrite_output_dir (`bool`, *optional*, defaults to `False`):
            Allow writing over an `output_dir` that already holds a LenVM checkpoint.
    """

    gamma: str = field(
        default="auto",
        metadata={"help": "Discount in (0, 1), or 'auto' for 0.01 ** (1 / L99) from the training completions."},
    )
    gamma_quantile: float = field(default=0.99, metadata={"help": "Length quantile used by gamma='auto'."})
    loss: str = field(default="mse", metadata={"help": "Value regression loss; only 'mse' (token mean)."})
    truncated: str = field(
        default="censor",
        metadata={
            "help": "Completions cut at max_new_tokens: 'censor' (default) keeps them with the one-sided loss "
            "relu(V_t - bound)^2, bound = -(1 - gamma^(k+1)) with k tokens seen after t; 'drop' ignores them.",
            "choices": ["censor", "drop"],
        },
    )
    max_length: int | None = field(
        default=1024,
        metadata={"help": "Longest prompt + completion in tokens; longer ones are cut without corrupting targets."},
    )
    use_chat_template: bool = field(default=True, metadata={"help": "Render prompts with the chat template."})
    freeze_layers: int = field(
        default=0,
        metadata={"help": "Freeze the embeddings and the lowest N backbone layers (0 = train all; full fine-tuning)."},
    )
    trunk_layers: int | None = field(
        default=None,
        metadata={
            "help": "Freeze the embeddings and lowest N layers, cache their outputs once and train only the layers "
            "above and the head on them (None/0 = full fine-tuning; all layers = a head on the frozen final states)."
        },
    )
    trunk_cache_dir: str | None = field(
        default=None, metadata={"help": "Where trunk features are saved and reused (None: in memory only)."}
    )
    trunk_cache_dtype: str = field(
        default="bfloat16",
        metadata={"help": "Storage precision of trunk features.", "choices": ["bfloat16", "float16", "float32"]},
    )
    padding_free: bool = field(
        default=False,
        metadata={"help": "Pack training sequences into rows of at most max_length tokens instead of padding."},
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow replacing an existing LenVM checkpoint in output_dir."}
    )
    # Defaults that differ from TrainingArguments: LenVM examples carry columns the model does not take,
    # the labels are remaining-token counts, and the loss must average over the global batch.
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep dataset columns (needed)."})
    learning_rate: float = field(default=2e-5, metadata={"help": "AdamW learning rate (paper: 2e-5)."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Scheduler (paper: cosine)."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps."})

    def __post_init__(self):
        if self.gamma != "auto":
            self.gamma = check_gamma(self.gamma)
        if self.loss != "mse":
            raise ValueError(f"loss={self.loss!r} is not supported; LenVM regresses values with 'mse'.")
        if self.truncated not in ("censor", "drop"):
            raise ValueError(f"truncated must be 'censor' or 'drop', got {self.truncated!r}")
        if not 0.0 < self.gamma_quantile <= 1.0:
            raise ValueError(f"gamma_quantile must lie in (0, 1], got {self.gamma_quantile}")
        if self.freeze_layers < 0:
            raise ValueError(f"freeze_layers must be >= 0 (0 trains every layer), got {self.freeze_layers}")
        if self.trunk_layers is not None and self.trunk_layers < 0:
            raise ValueError(f"trunk_layers must be >= 0 (None or 0 = full fine-tuning), got {self.trunk_layers}")
        if self.trunk_layers and self.freeze_layers:
            raise ValueError(
                "trunk_layers already freezes (and caches) the lowest layers; set freeze_layers=0 with it."
            )
        if self.trunk_cache_dtype not in ("bfloat16", "float16", "float32"):
            raise ValueError(f"trunk_cache_dtype must be bfloat16, float16 or float32, got {self.trunk_cache_dtype!r}")
        if self.max_length is not None and self.max_length < 2:
            raise ValueError(f"max_length must be at least 2 tokens, got {self.max_length}")
        if self.label_names is None:
            self.label_names = ["labels"]
        self.average_tokens_across_devices = True  # the token-mean loss is defined over the global batch
        super().__post_init__()


class LengthValueTrainer(Trainer):
    """``Trainer`` for a [`LengthValueModel`]: same loop, token-mean value loss, LenVM checkpoint layout.

    Args:
        model: a ``LengthValueModel``, or a backbone name / path (``None`` = the embedded default) that gets
            a fresh head.
        args: a [`LengthValueConfig`].
        train_dataset / eval_dataset: datasets from :func:`lenvm_rl.data.build_dataset`.
        processing_class: the LenVM tokenizer (saved with every checkpoint; its pad id pads batches), or for a
            vision-language backbone its processor (saved too; it turns each example's ``images`` into pixels).
        peft_config: a ``peft.LoraConfig`` to train LoRA adapters on the backbone; the head is always fully trained.
            On a VLM backbone, ``target_modules=None`` adapts the language tower's projections only.

    With ``args.trunk_layers`` the training set's trunk features are computed (or loaded) when training starts
    (``get_train_dataloader``; ``trunk_seconds`` records how long it took) and training batches carry them; with
    ``args.padding_free`` training batches are packed. Both use collators of their own for training only.
    """

    loss_is_scaled_for_ga = True  # compute_loss already divides by the global token count

    def __init__(
        self,
        model=None,
        args: LengthValueConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        peft_config=None,
        data_collator=None,
        compute_metrics=None,
        **kwargs,
    ):
        args = args if args is not None else LengthValueConfig(output_dir="lenvm_runs/model")
        if not isinstance(args, LengthValueConfig):
            raise TypeError("args must be a LengthValueConfig (it carries gamma and the loss definition).")
        if not args.resume_from_checkpoint:
            ensure_writable_output(args.output_dir, args.overwrite_output_dir)
        if not isinstance(model, LengthValueModel):
            model = LengthValueModel.from_backbone(model)
        model.gamma = _resolve_training_gamma(model.gamma, args, train_dataset)
        model.max_length = args.max_length
        model.use_chat_template = args.use_chat_template  # the prompt format of the training data, saved with it
        trunk = args.trunk_layers or 0
        if (trunk or args.padding_free) and model.is_vision:
            raise ValueError("trunk_layers and padding_free support text backbones only; set them to None / False.")
        if (trunk or args.padding_free) and data_collator is not None:
            raise ValueError("trunk_layers / padding_free build the training collator themselves; drop data_collator.")
        if peft_config is not None:
            if args.freeze_layers:
                raise ValueError("freeze_layers applies to full fine-tuning; with a peft_config set it to 0.")
            if trunk:
                raise ValueError(
                    "trunk_layers caches the frozen lower layers of a fully fine-tuned backbone; LoRA would adapt "
                    "those layers too. With a peft_config set trunk_layers=None."
                )
            _wrap_lora(model, peft_config)
        elif trunk:
            freeze_trunk(model, trunk)
        elif args.freeze_layers:
            freeze_lower_layers(model, args.freeze_layers)
        self._train_collator = None
        if data_collator is None:
            if processing_class is None:
                raise ValueError("Pass processing_class (the LenVM tokenizer) or a data_collator, to pad batches.")
            if is_processor(processing_class):
                data_collator = VisionLengthValueCollator(processing_class)
            else:
                pad_id = processing_class.pad_token_id
                if pad_id is None:
                    pad_id = processing_class.eos_token_id
                data_collator = LengthValueCollator(pad_id)
                if args.padding_free:
                    self._train_collator = PaddingFreeCollator(pad_id, row_tokens=args.max_length)
                elif trunk:
                    self._train_collator = TrunkPaddedCollator(pad_id)
        if compute_metrics is None:
            gamma = model.gamma
            compute_metrics = lambda p: value_metrics(p, gamma)  # noqa: E731
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            data_collator=data_collator,
            compute_metrics=compute_metrics,
            **kwargs,
        )
        self.model_accepts_loss_kwargs = True  # makes Trainer count labels across micro-batches and processes
        self.trunk_seconds = None  # time spent computing or loading trunk features, once trained
        if trunk and (self.is_deepspeed_enabled or self.is_fsdp_enabled):
            raise ValueError(
                "trunk_layers needs the whole model on each process; it does not run under DeepSpeed/FSDP."
            )

    def get_train_dataloader(self):
        """Training batches; with ``trunk_layers`` each example carries its trunk features (computed on first use),
        and with ``trunk_layers`` or ``padding_free`` batches come from the training collator."""
        if self.args.trunk_layers and not isinstance(self.train_dataset, TrunkFeatureDataset | None):
            self.train_dataset = self._with_trunk_features(self.train_dataset)
        if self._train_collator is None:
            return super().get_train_dataloader()
        eval_collator, self.data_collator = self.data_collator, self._train_collator
        try:
            return super().get_train_dataloader()
        finally:
            self.data_collator = eval_collator

    def _with_trunk_features(self, dataset) -> TrunkFeatureDataset:
        args, t0, model = self.args, time.perf_counter(), self.accelerator.unwrap_model(self.model)
        compute = "bfloat16" if args.bf16 else "float16" if args.fp16 else str(model.v_head.fc.weight.dtype)
        first = args.main_process_first(desc="trunk features") if args.trunk_cache_dir else contextlib.nullcontext()
        with first:  # the main process writes the cache, the others then read it
            cache = trunk_features(
                model,
                example_input_ids(dataset),
                args.trunk_layers,
                cache_dir=args.trunk_cache_dir,
                dtype=args.trunk_cache_dtype,
                compute=compute,
                batch_size=args.per_device_eval_batch_size,
                autocast=self.autocast_smart_context_manager,
            )
        self.trunk_seconds = time.perf_counter() - t0
        return TrunkFeatureDataset(dataset, cache)

    @property
    def gamma(self) -> float:
        return self.accelerator.unwrap_model(self.model).gamma

    def _lower_bounds(self, inputs):
        """The batch's censored lower bounds when they count (``truncated="censor"``), else None."""
        bounds = inputs.get("lower_bounds")
        return bounds if bounds is not None and self.args.truncated == "censor" else None

    def _get_num_items_in_batch(self, batch_samples, device):
        # Censored positions are trained tokens too: count them with the labels (the two never overlap).
        merged = []
        for b in batch_samples:
            bounds = self._lower_bounds(b)
            merged.append(
                b
                if bounds is None or "labels" not in b
                else {**b, "labels": torch.where(bounds != IGNORE_INDEX, bounds, b["labels"])}
            )
        return super()._get_num_items_in_batch(merged, device)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]
        # Padded batches carry an attention mask; packed ones position ids instead; trunk batches cached states.
        extra = {k: inputs[k] for k in ("attention_mask", "position_ids") if inputs.get(k) is not None}
        if inputs.get(TRUNK_KEY) is not None:
            extra.update(trunk_hidden_states=inputs[TRUNK_KEY], trunk_layers=self.args.trunk_layers)
        out = model(input_ids=inputs["input_ids"], **extra, **vision_inputs(inputs))
        squared, count = value_loss_sums(out.value, labels, self._lower_bounds(inputs), self.gamma)
        if num_items_in_batch is not None:
            # Gradients are averaged over processes by DDP / DeepSpeed, so scale back up to a global sum.
            loss = squared / num_items_in_batch * self.accelerator.num_processes
        else:
            loss = squared / count.clamp(min=1)
            if model.training:
                loss = loss / self.current_gradient_accumulation_steps
        return (loss, {"value": out.value}) if return_outputs else loss

    # ---- checkpoints in the LenVM layout (backbone or adapter + value_head.safetensors + lenvm_config.json)
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        self.accelerator.unwrap_model(self.model).save_pretrained(output_dir, state_dict=state_dict)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)  # engine-native state
        load_weights_into(self.accelerator.unwrap_model(model or self.model), resume_from_checkpoint)

    def _load_best_model(self) -> None:
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return super()._load_best_model()
        load_weights_into(self.accelerator.unwrap_model(self.model), self.state.best_model_checkpoint)


def value_loss_sums(
    values: torch.Tensor, labels: torch.Tensor, lower_bounds: torch.Tensor | None, gamma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed loss and trained-token count of a batch (the loss is their ratio over the global batch).

    Exact targets (``labels``, remaining counts, -100 = none): ``(V - G) ** 2``. Censored positions
    (``lower_bounds``, at least that many tokens to come, -100 = none): ``relu(V - bound) ** 2`` with
    ``bound = -(1 - gamma ** m)``, zero while ``V <= bound``; its gradient in V is >= 0, so a step only lowers V.
    """
    mask = labels != IGNORE_INDEX
    targets = remaining_to_value(labels.clamp(min=0), gamma).to(values.dtype)
    total = ((values - targets) ** 2 * mask).sum()
    count = mask.sum()
    if lower_bounds is not None:
        censored = lower_bounds != IGNORE_INDEX
        bound = remaining_to_value(lower_bounds.clamp(min=0), gamma).to(values.dtype)
        total = total + (torch.relu(values - bound) ** 2 * censored).sum()
        count = count + censored.sum()
    return total, count


def _resolve_training_gamma(model_gamma, args: LengthValueConfig, train_dataset) -> float:
    if args.gamma == "auto":
        if model_gamma is not None:
            return model_gamma  # continuing a trained LenVM keeps its gamma
        if train_dataset is None:
            raise ValueError("gamma='auto' needs a train_dataset to measure completion lengths; or set gamma.")
        # Censored completions count with their generated length (a lower bound), unless they are ignored.
        lengths = completion_lengths(train_dataset, include_censored=args.truncated == "censor")
        gamma = gamma_from_lengths(lengths, quantile=args.gamma_quantile)
        args.gamma = gamma  # recorded in training_args.bin and the logs
        return gamma
    if model_gamma is not None and abs(model_gamma - args.gamma) > 1e-12:
        raise ValueError(
            f"The model was trained with gamma={model_gamma} but the config sets gamma={args.gamma}; "
            "values at different gammas are not comparable. Set gamma to match or use 'auto'."
        )
    return float(args.gamma)


def _wrap_lora(model: LengthValueModel, peft_config) -> None:
    from peft import get_peft_model

    if model.is_peft:
        raise ValueError("The backbone already carries LoRA adapters; pass peft_config=None to continue training them.")
    if getattr(model.backbone, "is_loaded_in_4bit", False):
        from peft import prepare_model_for_kbit_training

        model.backbone = prepare_model_for_kbit_training(model.backbone)
    if getattr(peft_config, "task_type", None) is not None:
        # The backbone is a bare transformer (no LM head): a task-specific PeftModel (e.g. CAUSAL_LM, TRL's
        # default) would expect generation hooks and labels. A plain PeftModel forwards everything unchanged.
        peft_config = copy.copy(peft_config)
        peft_config.task_type = None
    if model.is_vision and getattr(peft_config, "target_modules", None) is None:
        peft_config = copy.copy(peft_config)  # the language tower only, never the vision tower
        peft_config.target_modules = language_lora_targets(model.backbone)
    model.backbone = get_peft_model(model.backbone, peft_config)
    for p in model.v_head.parameters():
        p.requires_grad_(True)
        p.data = p.data.float()  # the fully-trained head keeps fp32 master weights under a low-bit backbone


def load_weights_into(model: LengthValueModel, checkpoint_dir: str | os.PathLike) -> None:
    """Load a LenVM checkpoint's weights into an existing model in place (resume, best model)."""
    ckpt = Path(checkpoint_dir)
    if not (ckpt / VALUE_HEAD_FILE).is_file():
        raise FileNotFoundError(f"{ckpt} has no {VALUE_HEAD_FILE}; it is not a LenVM checkpoint to resume from.")
    if (ckpt / ADAPTER_CONFIG_FILE).is_file():
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model.backbone, load_file(str(ckpt / "adapter_model.safetensors")))
    elif (ckpt / "model.safetensors.index.json").is_file():
        from transformers.trainer_utils import load_sharded_checkpoint

        load_sharded_checkpoint(model.backbone, str(ckpt), strict=True)
    else:
        model.backbone.load_state_dict(load_file(str(ckpt / "model.safetensors")), strict=True)
    head_dtype = model.v_head.fc.weight.dtype
    model.load_head(ckpt / VALUE_HEAD_FILE)
    model.v_head.to(head_dtype)


def value_metrics(pred: EvalPrediction, gamma: float) -> dict[str, float]:
    """Eval metrics over the trained positions of every held-out completion.

    value_mse (value space), length_mae (tokens, via the inversion n = ln(1 + V) / ln(gamma)),
    mre_boundary (relative error of the predicted length at the last prompt token) and
    online_re_{0,25,50,75} (relative error of the predicted remaining length at that share of each completion).
    """
    values = pred.predictions[0] if isinstance(pred.predictions, (tuple, list)) else pred.predictions
    values, labels = np.asarray(values, dtype=np.float64), np.asarray(pred.label_ids)
    mask = labels != IGNORE_INDEX
    targets = remaining_to_value(torch.from_numpy(np.where(mask, labels, 0)), gamma).numpy()
    n_hat = value_to_remaining(torch.from_numpy(np.where(mask, values, 0.0)), gamma).numpy()
    metrics = {
        "value_mse": float(((values - targets) ** 2)[mask].mean()),
        "length_mae": float(np.abs(n_hat - labels)[mask].mean()),
    }
    first = mask.argmax(axis=1)
    rows = np.arange(len(labels))
    length = labels[rows, first]
    for f in ONLINE_FRACTIONS:
        idx = first + np.floor(f * length).astype(int)
        ok = (idx < labels.shape[1]) & mask.any(axis=1)
        ok[ok] &= mask[rows[ok], idx[ok]]
        remaining = labels[rows[ok], idx[ok]]
        err = np.abs(n_hat[rows[ok], idx[ok]] - remaining) / np.maximum(remaining, 1)
        metrics[f"online_re_{int(f * 100)}"] = float(err.mean()) if len(err) else float("nan")
    metrics["mre_boundary"] = metrics["online_re_0"]
    return metrics

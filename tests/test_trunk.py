"""Trunk features (lenvm_rl/trunk.py) and padding-free packing (lenvm_rl/packing.py) on a tiny random Llama:
training on cached lower-layer states is training the model itself, packed batches are padded batches."""

from __future__ import annotations

import copy
import shutil

import pytest
import torch
from peft import LoraConfig

from lenvm_rl.critic import LengthCritic
from lenvm_rl.data import LengthValueCollator, build_dataset
from lenvm_rl.modeling import LengthValueModel, position_ids_from_mask
from lenvm_rl.packing import TRUNK_KEY, PaddingFreeCollator, first_fit_decreasing
from lenvm_rl.trainer import LengthValueConfig, LengthValueTrainer
from lenvm_rl.trunk import (
    TrunkCache,
    cache_path,
    check_trunk_split,
    compute_trunk_cache,
    run_upper_layers,
    trunk_features,
    trunk_key,
    trunk_states,
)
from tests.conftest import make_records, tiny_config

GAMMA = 0.95


@pytest.fixture
def dataset(tokenizer):
    records = make_records(tokenizer, n=24, truncated_every=5)  # censored rows too: their hinge loss is packed alike
    return build_dataset(records, tokenizer, max_length=128)[0]


def fresh_model(tokenizer, layers: int = 3, seed: int = 0) -> LengthValueModel:
    from transformers import LlamaModel

    torch.manual_seed(seed)
    cfg = tiny_config(len(tokenizer))
    cfg.num_hidden_layers = layers
    return LengthValueModel(LlamaModel(cfg), gamma=GAMMA)


def config(tmp_path, name="run", **kw) -> LengthValueConfig:
    defaults = dict(
        output_dir=str(tmp_path / name),
        overwrite_output_dir=True,
        gamma=GAMMA,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        max_steps=4,
        optim="sgd",
        learning_rate=0.5,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        train_sampling_strategy="sequential",
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        logging_strategy="no",
    )
    return LengthValueConfig(**{**defaults, **kw})


def train(model, tokenizer, dataset, args) -> LengthValueTrainer:
    trainer = LengthValueTrainer(model, args, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    return trainer


def max_param_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    assert pa.keys() == pb.keys()
    return max(float((pa[k] - pb[k]).detach().abs().max()) for k in pa)


def padded(tokenizer, dataset):
    return LengthValueCollator(tokenizer.pad_token_id)([dataset[i] for i in range(len(dataset))])


# ---------------------------------------------------------------------------------------------- the split
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_upper_layers_on_trunk_states_reproduce_the_full_forward(tokenizer, dataset, layers):
    model = fresh_model(tokenizer).eval()
    batch = padded(tokenizer, dataset)  # right-padded rows of different lengths: masks and positions matter
    ids, mask = batch["input_ids"], batch["attention_mask"]
    pos = position_ids_from_mask(mask)
    with torch.no_grad():
        full = model(ids, mask).value
        low = trunk_states(model.backbone, ids, mask, pos, layers)
        split = model(ids, mask, trunk_hidden_states=low, trunk_layers=layers).value
        if layers == 3:  # all layers: the cache is the final state after the final norm, what the head reads
            final = model.backbone(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state
            assert torch.allclose(low, final, atol=1e-6)
    keep = mask.bool()
    assert float((split - full)[keep].abs().max()) < 1e-5
    assert check_trunk_split(model, layers) < 1e-5
    # the check has teeth: upper layers fed wrong positions (no restart on padding) do not reproduce the model
    shifted = run_upper_layers(model.backbone, low, mask, pos + 3, layers) if layers < 3 else None
    if shifted is not None:
        assert float((model.v_head(shifted).detach() - model.v_head(low).detach()).abs().max()) > 0


def test_a_forward_the_split_cannot_reproduce_is_refused(tokenizer):
    model = fresh_model(tokenizer)
    # A forward that rescales its input embeddings (as Gemma does) would rescale cached states a second time.
    original = type(model.backbone).forward

    def scaling_forward(self, input_ids=None, inputs_embeds=None, **kw):
        embeds = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        return original(self, inputs_embeds=embeds * 2.0, **kw)

    model.backbone.forward = scaling_forward.__get__(model.backbone)
    with pytest.raises(NotImplementedError, match="do not reproduce"):
        check_trunk_split(model, 1)


# ---------------------------------------------------------------------------------------------- training
@pytest.mark.parametrize("padding_free", [False, True])
def test_trunk_training_is_frozen_layer_training(tokenizer, dataset, tmp_path, padding_free):
    """Four SGD steps on cached states of the lowest layer (fp32 cache) move every weight as training the whole
    model with that layer frozen does; the checkpoint loads as a plain LenVM whose values are the trained model's."""
    base = fresh_model(tokenizer)
    frozen = train(copy.deepcopy(base), tokenizer, dataset, config(tmp_path, "frozen", freeze_layers=1))
    trunk = train(
        copy.deepcopy(base),
        tokenizer,
        dataset,
        config(tmp_path, "trunk", trunk_layers=1, trunk_cache_dtype="float32", padding_free=padding_free),
    )
    assert trunk.trunk_seconds is not None and trunk.trunk_seconds >= 0
    trained = trunk.model
    assert max_param_diff(trained, frozen.model) < 1e-5
    assert max_param_diff(trained, base) > 1e-3  # it did train (the comparison above is not of two idle models)
    lower = {k for k, _ in base.named_parameters() if "layers.0." in k or "embed_tokens" in k}
    for (k, p), (_, q) in zip(trained.named_parameters(), base.named_parameters()):
        assert torch.equal(p, q) == (k in lower), k  # the trunk is the backbone's, everything above moved

    trunk.save_model()
    critic = LengthCritic.from_pretrained(tmp_path / "trunk")
    batch = padded(tokenizer, dataset)
    with torch.no_grad():
        end_to_end = trained.eval()(batch["input_ids"], batch["attention_mask"]).value
        loaded = critic.values(batch["input_ids"], batch["attention_mask"])
        cached = values_from_cached_states(trunk, batch)
    keep = batch["attention_mask"].bool()
    assert float((loaded - end_to_end)[keep].abs().max()) < 1e-6
    assert float((cached - end_to_end)[keep].abs().max()) < 1e-5  # what training saw is what the model computes


def values_from_cached_states(trainer, batch):
    """Values of the trained model computed from the trainer's cached trunk states (padded)."""
    ds = trainer.train_dataset
    states = torch.zeros((*batch["input_ids"].shape, trainer.model.config.hidden_size))
    for i in range(len(ds)):
        h = ds[i][TRUNK_KEY]
        states[i, : len(h)] = h
    return trainer.model(batch["input_ids"], batch["attention_mask"], trunk_hidden_states=states, trunk_layers=1).value


def test_trunk_of_all_layers_trains_only_the_head(tokenizer, dataset, tmp_path):
    base = fresh_model(tokenizer)
    trainer = train(copy.deepcopy(base), tokenizer, dataset, config(tmp_path, trunk_layers=3))
    trained = dict(trainer.model.named_parameters())
    for k, p in base.named_parameters():
        assert torch.equal(trained[k], p) == k.startswith("backbone."), k  # the final norm stays frozen too
    assert not any(p.requires_grad for p in trainer.model.backbone.parameters())


def test_gradient_checkpointing_still_trains_the_upper_layers(tokenizer, dataset, tmp_path):
    base = fresh_model(tokenizer)
    args = config(
        tmp_path, trunk_layers=1, gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": True}
    )
    trained = train(copy.deepcopy(base), tokenizer, dataset, args).model
    top = "backbone.layers.2.mlp.down_proj.weight"
    assert not torch.equal(dict(trained.named_parameters())[top], dict(base.named_parameters())[top])


# ---------------------------------------------------------------------------------------------- packing
def test_packed_loss_and_values_equal_padded(tokenizer, dataset, tmp_path):
    model = fresh_model(tokenizer).eval()  # compute_loss outside a training step
    features = [dataset[i] for i in range(12)]
    trainer = LengthValueTrainer(model, config(tmp_path), train_dataset=dataset, processing_class=tokenizer)
    pad = LengthValueCollator(tokenizer.pad_token_id, pad_to_multiple_of=None)(features)
    packed = PaddingFreeCollator(tokenizer.pad_token_id, row_tokens=128)(features)
    assert "attention_mask" not in packed and packed["input_ids"].shape[0] < pad["input_ids"].shape[0]
    assert packed["input_ids"].numel() < pad["input_ids"].numel()  # fewer computed tokens
    with torch.no_grad():
        loss_pad = trainer.compute_loss(model, pad)
        loss_packed = trainer.compute_loss(model, packed)
        v_pad = model(pad["input_ids"], pad["attention_mask"]).value[pad["labels"] != -100]
        v_packed = model(packed["input_ids"], position_ids=packed["position_ids"]).value[packed["labels"] != -100]
    assert abs(float(loss_pad) - float(loss_packed)) < 1e-6 * max(1.0, float(loss_pad))
    assert torch.allclose(torch.sort(v_pad).values, torch.sort(v_packed).values, atol=1e-6)
    # the comparison can fail: without restarting positions the packed rows see their neighbours
    mixed = torch.arange(packed["input_ids"].shape[1]).expand_as(packed["input_ids"])
    with torch.no_grad():
        wrong = model(packed["input_ids"], position_ids=mixed).value[packed["labels"] != -100]
    assert float((torch.sort(wrong).values - torch.sort(v_pad).values).abs().max()) > 1e-4


def test_first_fit_decreasing_respects_the_row_size():
    lengths = [5, 9, 3, 7, 1, 12]
    rows = first_fit_decreasing(lengths, 12)
    assert sorted(i for r in rows for i in r) == list(range(6))
    assert all(sum(lengths[i] for i in r) <= 12 for r in rows) and len(rows) == 4  # 37 tokens need 4


# ---------------------------------------------------------------------------------------------- the cache
@pytest.mark.slow  # over 2 s on the 2 cores
def test_cache_is_reused_keyed_and_refused_for_another_backbone(tokenizer, dataset, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    args = config(tmp_path, trunk_layers=2, trunk_cache_dir=str(cache_dir), max_steps=1)
    train(fresh_model(tokenizer), tokenizer, dataset, args)
    (made,) = cache_dir.glob("*.safetensors")

    # same backbone and data: loaded, not recomputed
    import lenvm_rl.trunk as trunk_mod

    def no_compute(*a, **k):
        raise AssertionError("recomputed a cache that was on disk")

    monkeypatch.setattr(trunk_mod, "compute_trunk_cache", no_compute)
    train(fresh_model(tokenizer), tokenizer, dataset, args)
    monkeypatch.undo()

    # other data -> another key, another file; other L -> another file
    train(fresh_model(tokenizer), tokenizer, dataset.select(range(20)), args)
    train(fresh_model(tokenizer), tokenizer, dataset, config(tmp_path, trunk_layers=1, trunk_cache_dir=str(cache_dir)))
    assert len(list(cache_dir.glob("*.safetensors"))) == 3

    # a file made for another backbone, found where this backbone's cache should be: refused, saying why
    other = fresh_model(tokenizer, seed=1)
    key = trunk_key(other, 2, list(dataset["input_ids"]), "bfloat16", "torch.float32")
    shutil.copy(made, cache_path(cache_dir, key))
    with pytest.raises(ValueError, match="backbone"):
        train(other, tokenizer, dataset, args)


def test_cache_round_trips_in_half_precision(tokenizer, dataset, tmp_path):
    model = fresh_model(tokenizer)
    ids = list(dataset["input_ids"])
    cache = trunk_features(model, ids, 1, cache_dir=tmp_path, dtype="float16")
    assert cache.hidden.dtype == torch.float16 and len(cache) == len(ids)
    assert [len(cache[i]) for i in range(len(ids))] == [len(x) for x in ids]
    loaded = TrunkCache.load(next(tmp_path.glob("*.safetensors")), cache.key)
    assert torch.equal(loaded.hidden, cache.hidden) and torch.equal(loaded.offsets, cache.offsets)
    with torch.no_grad():  # the stored states are the trunk's output, rounded to half precision
        x = torch.tensor([ids[3]])
        exact = trunk_states(model.backbone, x, torch.ones_like(x), None, 1)[0]
    assert torch.allclose(cache[3].float(), exact, atol=1e-2, rtol=1e-3)


def test_float16_overflow_is_an_error(tokenizer, dataset):
    model = fresh_model(tokenizer)
    with torch.no_grad():
        model.backbone.embed_tokens.weight.mul_(1e6)  # a residual stream beyond float16's 65504
    ids = list(dataset["input_ids"])[:4]
    key = trunk_key(model, 1, ids, "float16", "float32")
    with pytest.raises(ValueError, match="bfloat16"):
        compute_trunk_cache(model, ids, 1, key)


# ---------------------------------------------------------------------------------------------- bad settings
def test_bad_settings_are_refused(tokenizer, dataset, tmp_path):
    with pytest.raises(ValueError, match="the backbone has 3 layers"):
        LengthValueTrainer(fresh_model(tokenizer), config(tmp_path, trunk_layers=4), processing_class=tokenizer)
    with pytest.raises(ValueError, match="LoRA"):
        LengthValueTrainer(
            fresh_model(tokenizer),
            config(tmp_path, trunk_layers=1),
            processing_class=tokenizer,
            peft_config=LoraConfig(r=2, target_modules=["q_proj"]),
        )
    with pytest.raises(ValueError, match="freeze_layers=0"):
        config(tmp_path, trunk_layers=1, freeze_layers=1)
    with pytest.raises(ValueError, match=">= 0"):
        config(tmp_path, trunk_layers=-1)
    with pytest.raises(ValueError, match="trunk_cache_dtype"):
        config(tmp_path, trunk_layers=1, trunk_cache_dtype="int8")
    with pytest.raises(ValueError, match="drop data_collator"):
        LengthValueTrainer(
            fresh_model(tokenizer),
            config(tmp_path, padding_free=True),
            processing_class=tokenizer,
            data_collator=LengthValueCollator(0),
        )


def test_trunk_zero_is_full_fine_tuning(tokenizer, dataset, tmp_path):
    base = fresh_model(tokenizer)
    today = train(copy.deepcopy(base), tokenizer, dataset, config(tmp_path, "today"))
    zero = train(copy.deepcopy(base), tokenizer, dataset, config(tmp_path, "zero", trunk_layers=0))
    assert zero.trunk_seconds is None and max_param_diff(zero.model, today.model) == 0.0

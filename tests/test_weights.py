"""Weight scores and masks (WAGLE and its baselines) on the tiny 2-layer Llama."""

from __future__ import annotations

import json

import pytest
import torch

from attribkit.core.attribution import Attribution
from attribkit.core.errors import InputError
from attribkit.internals.weights import (
    MASK_METHODS,
    WeightMask,
    as_causal_lm,
    weight_mask,
    weight_scores,
)

FORGET = [("The cat sat on the", " mat"), ("Alice went to the", " market")]
RETAIN = [
    ("The capital of France is", " Paris"),
    ("The dog ran in the", " park"),
    ("Rome is the capital of", " Italy"),
]


def _independent_scores(lm, mu: float) -> dict[str, torch.Tensor]:
    """|(θ − g_r/μ) ⊙ g_f| with g = ∇ Σ_examples mean answer-token NLL, one unpadded sequence
    at a time, written without the library's helpers."""
    model, tok = lm.model, lm.tokenizer
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p for n, p in model.named_parameters() if p.requires_grad]

    def grad(examples):
        total = [torch.zeros_like(p) for p in params]
        for prompt, answer in examples:
            p_ids = tok(prompt, add_special_tokens=True)["input_ids"]
            a_ids = tok(answer, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([p_ids + a_ids])
            logits = model(input_ids=ids).logits[0]
            logp = torch.log_softmax(logits[len(p_ids) - 1 : -1], dim=-1)
            nll = -logp[torch.arange(len(a_ids)), torch.tensor(a_ids)].mean()
            for acc, g in zip(total, torch.autograd.grad(nll, params), strict=True):
                acc += g
        return total

    g_f, g_r = grad(FORGET), grad(RETAIN)
    return {
        n: ((p.detach() - gr / mu) * gf).abs()
        for n, p, gf, gr in zip(names, params, g_f, g_r, strict=True)
    }


@pytest.mark.parametrize("mu", [1e-6, 1.0])
def test_wagle_score_matches_the_formula(tiny_lm, mu):
    ours = weight_scores(tiny_lm, FORGET, RETAIN, "wagle", mu=mu, batch_size=2)
    ref = _independent_scores(tiny_lm, mu)
    assert list(ours) == list(ref)
    for name, r in ref.items():
        scale = float(r.abs().max())
        err = float((ours[name] - r).abs().max())
        assert err <= 1e-6 * scale, (name, err, scale)  # float32, padded vs unpadded batches


def test_baseline_scores(tiny_lm):
    params = dict(tiny_lm.model.named_parameters())
    mag = weight_scores(tiny_lm, None, None, "magnitude")
    for n, s in mag.items():
        assert torch.equal(s, params[n].detach().abs())
    grad = weight_scores(tiny_lm, FORGET, None, "gradient")
    snip = weight_scores(tiny_lm, FORGET, None, "snip")
    for n in grad:
        torch.testing.assert_close(snip[n], grad[n] * params[n].detach().abs())
    r0 = weight_scores(tiny_lm, None, None, "random", seed=0)
    r0b = weight_scores(tiny_lm, None, None, "random", seed=0)
    r1 = weight_scores(tiny_lm, None, None, "random", seed=1)
    name = next(iter(r0))
    assert torch.equal(r0[name], r0b[name]) and not torch.equal(r0[name], r1[name])


@pytest.mark.parametrize("method", MASK_METHODS)
def test_mask_keeps_the_top_fraction_globally(tiny_lm, method):
    ratio = 0.2
    mask = weight_mask(tiny_lm, FORGET, RETAIN, method=method, ratio=ratio, seed=3)
    scores = weight_scores(tiny_lm, FORGET, RETAIN, method, seed=3)
    n = sum(m.numel() for m in mask.masks.values())
    assert mask.n_selected == round(ratio * n) and mask.n_total == n
    kept = torch.cat([scores[k][m] for k, m in mask.masks.items()])
    dropped = torch.cat([scores[k][~m] for k, m in mask.masks.items()])
    assert float(kept.min()) >= float(dropped.max())
    # the Attribution: one unit per weight tensor, scored by the fraction selected
    names = [n for n, p in tiny_lm.model.named_parameters() if p.requires_grad]
    assert [u.label for u in mask.units] == names
    for unit, frac, m in zip(mask.units, mask.scores, mask.masks.values(), strict=True):
        assert unit.meta["selected"] == int(m.sum())
        assert frac == pytest.approx(int(m.sum()) / m.numel())
    assert mask.params == {"method": method, "ratio": ratio, "mu": 1e-6, "seed": 3}
    grads = {"wagle": 5, "gradient": 2, "snip": 2}.get(method, 0)
    assert mask.cost.backward_passes == grads and mask.cost.forward_passes == grads
    assert mask.cost.seconds > 0


def test_full_ratio_selects_everything(tiny_lm):
    mask = weight_mask(tiny_lm, FORGET, RETAIN, "magnitude", ratio=1.0)
    assert mask.n_selected == mask.n_total


def test_mask_round_trip(tiny_lm, tmp_path):
    mask = weight_mask(tiny_lm, FORGET, RETAIN, "wagle", ratio=0.3, mu=1e-3, seed=5)
    path = mask.save(tmp_path / "m.safetensors")
    back = WeightMask.load(path)
    assert list(back.masks) == list(mask.masks)
    for name, m in mask.masks.items():
        assert back.masks[name].dtype == torch.bool and torch.equal(back.masks[name], m)
    assert back.params == {"method": "wagle", "ratio": 0.3, "mu": 1e-3, "seed": 5}
    assert back.method == "weights:wagle" and back.task == "weights"
    assert [u.to_dict() for u in back.units] == [u.to_dict() for u in mask.units]
    assert back.scores.tolist() == mask.scores.tolist()
    assert back.cost.backward_passes == mask.cost.backward_passes
    summary = mask.as_attribution()
    assert type(summary) is Attribution
    json.dumps(summary.to_dict())
    assert Attribution.from_dict(summary.to_dict()).scores.tolist() == mask.scores.tolist()


def test_load_refuses_other_files(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(InputError, match="not an attribkit weight mask"):
        WeightMask.load(tmp_path / "x.safetensors")
    (tmp_path / "y.safetensors").write_text("nope")
    with pytest.raises(InputError, match="safetensors"):
        WeightMask.load(tmp_path / "y.safetensors")


def test_bare_module_and_tokenizer(tiny_lm):
    a = weight_mask(tiny_lm.model, FORGET, RETAIN, "gradient", tokenizer=tiny_lm.tokenizer)
    b = weight_mask(tiny_lm, FORGET, RETAIN, "gradient")
    for name in a.masks:
        assert torch.equal(a.masks[name], b.masks[name])


@pytest.mark.parametrize("ratio", [0, -0.1, 1.5, float("nan")])
def test_bad_ratio(tiny_lm, ratio):
    with pytest.raises(InputError, match=r"\(0, 1\]"):
        weight_mask(tiny_lm, FORGET, RETAIN, "magnitude", ratio=ratio)


def test_bad_inputs(tiny_lm):
    with pytest.raises(InputError, match="both the forget and the retain"):
        weight_mask(tiny_lm, FORGET, RETAIN + FORGET[:1], "wagle")
    with pytest.raises(InputError, match="unknown mask method"):
        weight_mask(tiny_lm, FORGET, RETAIN, "fisher")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="needs the retain set"):
        weight_mask(tiny_lm, FORGET, None, "wagle")
    with pytest.raises(InputError, match="empty"):
        weight_mask(tiny_lm, [], RETAIN, "gradient")
    with pytest.raises(InputError, match="mu must be"):
        weight_mask(tiny_lm, FORGET, RETAIN, "wagle", mu=0.0)


def test_unsupported_architectures(tiny_lm):
    from transformers import LlamaModel

    with pytest.raises(InputError, match="no trainable parameters"):
        as_causal_lm(torch.nn.Identity(), tiny_lm.tokenizer)
    with pytest.raises(InputError, match="not a causal language model"):
        weight_mask(torch.nn.Linear(3, 2), FORGET, RETAIN, tokenizer=tiny_lm.tokenizer)
    with pytest.raises(InputError, match="not a causal language model"):
        as_causal_lm(LlamaModel(tiny_lm.model.config), tiny_lm.tokenizer)
    with pytest.raises(InputError, match="tokenizer"):
        as_causal_lm(tiny_lm.model)
    with pytest.raises(InputError, match="LanguageModel or a Hugging Face"):
        as_causal_lm("smollm2")

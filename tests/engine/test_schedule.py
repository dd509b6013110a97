import math

import pytest
import torch
from hypothesis import example, given, strategies as st
from omegaconf import OmegaConf

from rsdet.engine.schedule import make_plan
from rsdet.errors import ConfigError


def _schedule(**kw):
    base = dict(batch_size=16, reference_batch=16, lr=None, epochs=12, steps=[8, 11], max_iters=None,
                warmup_iters=500, warmup_ratio=0.001)
    base.update(kw)
    return OmegaConf.create(base)


def test_linear_lr_scaling_with_batch():
    loss = OmegaConf.create({"lr": 0.012})
    assert make_plan(_schedule(), loss, 1000).base_lr == 0.012
    assert abs(make_plan(_schedule(batch_size=4), loss, 1000).base_lr - 0.003) < 1e-12
    assert make_plan(_schedule(lr=0.02, batch_size=8), loss, 1000).base_lr == 0.01


def test_epoch_steps_become_iterations_and_warmup_is_linear():
    plan = make_plan(_schedule(batch_size=10, warmup_iters=50, warmup_ratio=0.01), OmegaConf.create({"lr": 1.0}), 100)
    assert plan.iters_per_epoch == 10 and plan.max_iters == 120 and plan.steps == [80, 110]
    assert abs(plan.lr_factor(0) - 0.01) < 1e-12
    assert abs(plan.lr_factor(25) - 0.505) < 1e-12
    assert plan.lr_factor(50) == 1.0 and plan.lr_factor(79) == 1.0
    assert abs(plan.lr_factor(80) - 0.1) < 1e-12 and abs(plan.lr_factor(115) - 0.01) < 1e-12


def test_explicit_max_iters_scales_steps():
    plan = make_plan(_schedule(max_iters=24, warmup_iters=0), OmegaConf.create({"lr": 1.0}), 10_000)
    assert plan.max_iters == 24 and plan.steps == [16, 22]


def test_optimizer_choice():
    import pytest
    import torch

    from rsdet.engine.schedule import build_optimizer
    from rsdet.errors import ConfigError

    model = torch.nn.Linear(2, 2)
    plan = make_plan(_schedule(), OmegaConf.create({"lr": 0.01}), 100)
    sgd = build_optimizer(model, OmegaConf.create({"momentum": 0.9, "weight_decay": 1e-4}), plan)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.9
    adamw = build_optimizer(model, OmegaConf.create({"optimizer": "adamw", "momentum": 0.9, "weight_decay": 0.05}), plan)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["weight_decay"] == 0.05
    with pytest.raises(ConfigError, match="schedule.optimizer='lamb'"):
        build_optimizer(model, OmegaConf.create({"optimizer": "lamb", "momentum": 0.9, "weight_decay": 0}), plan)


@pytest.mark.parametrize("key, value", [
    ("lr", float("nan")), ("lr", float("inf")), ("lr", -0.01), ("lr", 0), ("lr", "abc"), ("lr", True),
    ("batch_size", 0), ("batch_size", 2.5), ("epochs", float("inf")), ("epochs", 0), ("max_iters", -1),
    ("steps", [8, float("nan")]), ("warmup_iters", -5), ("warmup_ratio", 1.5), ("momentum", 1.0),
    ("weight_decay", float("-inf")), ("grad_clip", float("nan")), ("checkpoint_every", 0),
    ("reference_batch", 0),
])
def test_numeric_options_are_checked_before_anything_is_built(key, value):
    schedule = _schedule(momentum=0.9, weight_decay=1e-4, grad_clip=None, checkpoint_every=100, lr=0.01)
    schedule[key] = value
    with pytest.raises(ConfigError, match=rf"schedule\.{key}(\[\d+\])?=") as info:
        make_plan(schedule, OmegaConf.create({"lr": 0.01}), 1000)
    assert "must be" in str(info.value)


@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10, 10) | st.text(max_size=5))
@example(1.2e308)  # finite, but not once scaled to the batch
def test_any_learning_rate_is_used_or_refused_with_a_config_error(value):
    try:
        plan = make_plan(_schedule(lr=value), OmegaConf.create({"lr": 0.01}), 1000)
    except ConfigError as err:
        assert "schedule.lr=" in str(err)
    else:
        assert math.isfinite(plan.base_lr) and plan.base_lr > 0


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_the_foreach_optimiser_step_equals_the_per_parameter_loop_bit_for_bit(kind):
    """build_optimizer uses foreach=True (docs/performance.md): it must not change a single bit."""
    torch.manual_seed(0)
    shapes = [(7, 5), (5,), (3, 3, 2, 2), (1,)]
    start = [torch.randn(s) for s in shapes]
    grads = [[torch.randn(s) for s in shapes] for _ in range(6)]
    results = []
    for foreach in (False, True):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        opt = (torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4, foreach=foreach) if kind == "sgd"
               else torch.optim.AdamW(params, lr=0.01, weight_decay=0.05, foreach=foreach))
        for step in grads:
            for q, g in zip(params, step):
                q.grad = g.clone()
            opt.step()
        results.append([q.detach().clone() for q in params])
    for a, b in zip(*results):
        assert torch.equal(a, b)

"""The end-of-training options: a warmed-up weight average, BatchNorm statistics recomputed on clean
images, label smoothing, and any schedule annealed to zero over its last epochs. Each is off by
default; each test shows the option does what its config comment says."""

import copy
import math

import pytest
import torch
from torch.optim import lr_scheduler
from torch.optim.swa_utils import AveragedModel

import mnist_arch.trainer as trainer
from mnist_arch.config import compose_config
from mnist_arch.data import load_mnist
from mnist_arch.errors import ConfigError
from mnist_arch.model import build_model
from mnist_arch.optim import build_schedule
from mnist_arch.trainer import ema_decays, fit, recompute_batchnorm

from .test_train import SMALL


# A short run that learns: 32 steps an epoch at a constant rate (SMALL's one-cycle barely starts in 16)
LEARNS = (*SMALL, "data.train_subset=4000", "seed=3", "schedule=none", "optim.lr=0.05")


def averaged_sequence(decay, warmup, values):
    """The average of a one-weight model after each of ``values`` is its weight for a step."""
    model = torch.nn.Linear(1, 1, bias=False)
    average = AveragedModel(model, multi_avg_fn=ema_decays(decay, warmup), use_buffers=True)
    seen = []
    for v in values:
        with torch.no_grad():
            model.weight.fill_(v)
        average.update_parameters(model)
        seen.append(average.module.weight.item())
    return seen


def test_the_warmed_up_average_starts_with_small_decays_and_reaches_the_set_one():
    values = [float(k) for k in range(1, 6)]
    got = averaged_sequence(0.999, True, values)
    expected, avg = [1.0], 1.0  # the first update copies the weights
    for n, v in enumerate(values[1:], 1):  # then decay min(0.999, (1 + n) / (10 + n)): 2/11, 3/12, 4/13, 5/14
        d = min(0.999, (1 + n) / (10 + n))
        avg = d * avg + (1 - d) * v
        expected.append(avg)
    assert got == pytest.approx(expected, rel=1e-6)
    assert got[1] == pytest.approx((2 * 1 + 9 * 2) / 11, rel=1e-6)
    # capped: after many updates the decay is the configured one, not the ramp's
    long = averaged_sequence(0.9, True, [0.0] * 200 + [1.0])
    assert long[-1] == pytest.approx(0.1, rel=1e-5)
    # without warm-up the fixed decay applies from the second update on: the first weights linger
    assert averaged_sequence(0.999, False, values)[1] == pytest.approx(0.999 * 1 + 0.001 * 2, rel=1e-6)


def test_the_warmed_up_average_is_meaningful_from_the_first_epoch():
    one_epoch = [*LEARNS, "trainer.epochs=1"]
    plain = fit(compose_config(one_epoch))  # 61.5% after 32 steps
    cold = fit(compose_config([*one_epoch, "trainer.ema=0.999"]))  # 8.7%: mostly the first step's weights
    warm = fit(compose_config([*one_epoch, "trainer.ema=0.999", "trainer.ema_warmup=true"]))  # 57.5%
    assert cold["history"][0]["test_acc"] < plain["history"][0]["test_acc"] - 30
    assert warm["history"][0]["test_acc"] > plain["history"][0]["test_acc"] - 10
    assert warm["history"][0]["train_loss"] == plain["history"][0]["train_loss"]  # the average never feeds back


def batch_statistics(model, x, batch_size, n_batches):
    """Per BatchNorm layer: the mean over batches of the batch mean and unbiased variance of its input."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    seen = {id(m): [] for m in norms}
    hooks = [m.register_forward_hook(lambda m, inp, out: seen[id(m)].append(inp[0].detach().clone())) for m in norms]
    model.eval()
    with torch.no_grad():
        for start in range(0, n_batches * batch_size, batch_size):
            model(x[start : start + batch_size])
    for h in hooks:
        h.remove()
    stats = []
    for m in norms:
        means = torch.stack([b.mean((0, 2, 3)) for b in seen[id(m)]])
        variances = torch.stack([b.var((0, 2, 3), unbiased=True) for b in seen[id(m)]])
        stats.append((means.mean(0), variances.mean(0)))
    return stats


def test_recomputed_batchnorm_statistics_are_the_clean_batches_and_dropout_stays_off():
    cfg = compose_config(["model=tiny", "model.dropout.rate=0.5", "data.train_subset=1000"])
    torch.manual_seed(0)
    model = build_model(cfg.model)
    x = load_mnist(cfg.data, torch.device("cpu")).train_x
    # In eval mode the BN layers normalise with their (initial) running statistics, so the inputs a
    # layer sees in the reference pass differ from those during recomputation for all but the first
    # layer. Recompute once, then compare the first BN layer exactly and every layer's shape.
    reference = batch_statistics(copy.deepcopy(model), x, 100, 4)
    recompute_batchnorm(model, x, 100, 4)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert not model.training and not any(m.training for m in model.modules())
    first_mean, first_var = reference[0]
    assert torch.allclose(norms[0].running_mean, first_mean, atol=1e-6)
    assert torch.allclose(norms[0].running_var, first_var, rtol=1e-4, atol=1e-7)
    assert all(m.momentum == 0.1 for m in norms)  # the training momentum is put back
    # The same call twice gives the same buffers: dropout was off (a random mask would change them)
    first = [m.running_var.clone() for m in norms]
    recompute_batchnorm(model, x, 100, 4)
    assert all(torch.equal(a, m.running_var) for a, m in zip(first, norms))


def test_the_evaluated_average_carries_the_recomputed_statistics(monkeypatch):
    cfg = compose_config([*SMALL, "model=tiny", "trainer.epochs=1", "trainer.ema=0.9", "trainer.ema_warmup=true",
                          "trainer.bn_recompute=5"])
    train_x = load_mnist(cfg.data, torch.device("cpu")).train_x
    checked = []
    real_evaluate = trainer.evaluate

    def evaluate_and_check(model, x, y, batch_size):
        again = copy.deepcopy(model)
        recompute_batchnorm(again, train_x, cfg.trainer.batch_size, 5)
        buffers = dict(model.named_buffers())
        for name, value in again.named_buffers():
            if "running" in name:
                assert torch.allclose(buffers[name], value, atol=1e-6), name
        checked.append(model)
        return real_evaluate(model, x, y, batch_size)

    monkeypatch.setattr(trainer, "evaluate", evaluate_and_check)
    result = fit(cfg)
    assert len(checked) == 1
    assert "bn_seconds" in result["history"][0] and result["history"][0]["bn_seconds"] >= 0
    # the model evaluated is the average's copy, not the raw weights
    assert isinstance(checked[0], torch.nn.Module) and not isinstance(checked[0], AveragedModel)


def smoothed_target_entropy(eps: float, classes: int = 10) -> float:
    on, off = 1 - eps + eps / classes, eps / classes
    return -(on * math.log(on) + (classes - 1) * off * math.log(off))


def test_label_smoothing_is_the_training_loss_and_never_the_test_loss():
    smooth = fit(compose_config([*LEARNS, "trainer.label_smoothing=0.5"]))
    plain = fit(compose_config(LEARNS))
    floor = smoothed_target_entropy(0.5)  # 1.677: no prediction can score below the smoothed target's entropy
    assert all(h["train_loss"] >= floor for h in smooth["history"])
    assert plain["history"][-1]["train_loss"] < floor / 2
    # the test loss is plain cross-entropy: a net that learnt gets far below the smoothed floor there too
    assert smooth["history"][-1]["test_loss"] < floor and smooth["history"][-1]["test_acc"] > 80


def lrs(schedule_name, epochs, steps, anneal, **extra):
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0, momentum=0.9)
    cfg = compose_config([f"schedule={schedule_name}", f"schedule.anneal_epochs={anneal}",
                          *[f"schedule.{k}={v}" for k, v in extra.items()]]).schedule
    schedule = build_schedule(opt, cfg, epochs, steps)
    seen = []
    for _ in range(epochs * steps):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    return seen


@pytest.mark.parametrize("name", ["none", "step", "cosine", "onecycle"])
def test_every_schedule_is_annealed_to_near_zero_over_its_last_epochs(name):
    epochs, steps, anneal = 5, 10, 2
    base = lrs(name, epochs, steps, 0)
    annealed = lrs(name, epochs, steps, anneal)
    total, ramp = epochs * steps, anneal * steps
    for s, (b, a) in enumerate(zip(base, annealed)):
        assert a == pytest.approx(b * min(1.0, (total - s) / ramp), rel=1e-9, abs=1e-12), s
    assert annealed[: total - ramp] == base[: total - ramp]  # untouched before the last 2 epochs
    assert annealed[-1] == pytest.approx(base[-1] / ramp)  # the last step: 1/20 of the schedule's rate


def test_constant_rate_annealed_reads_as_a_linear_ramp():
    seen = lrs("none", 4, 5, 1)
    assert seen[:15] == [1.0] * 15
    assert seen[15:] == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2])


@pytest.mark.parametrize("override, message", [
    ("trainer.bn_recompute=-1", "trainer.bn_recompute=-1 must be >= 0"),
    ("trainer.label_smoothing=1.0", r"trainer.label_smoothing=1.0 must be in \[0, 1\)"),
    ("schedule.anneal_epochs=3", "schedule.anneal_epochs=3 must be between 0 and trainer.epochs=2"),
    ("schedule.anneal_epochs=-1", "schedule.anneal_epochs=-1 must be between 0 and trainer.epochs=2"),
])
def test_bad_end_of_training_values_are_refused_before_any_data(monkeypatch, override, message):
    monkeypatch.setattr(trainer, "load_mnist", lambda *a: pytest.fail("data loaded before the check"))
    with pytest.raises(ConfigError, match=message):
        fit(compose_config([*SMALL, override]))


def test_the_epoch_line_shows_the_statistics_cost(caplog):
    caplog.set_level("INFO", logger="mnist_arch.trainer")
    fit(compose_config([*SMALL, "trainer.epochs=1", "trainer.bn_recompute=3"]))
    epoch_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch")]
    assert len(epoch_lines) == 1 and "(BN stats " in epoch_lines[0]


def test_onecycle_momentum_still_cycles_when_annealed():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0, momentum=0.9)
    schedule = build_schedule(opt, compose_config(["schedule.anneal_epochs=1"]).schedule, 3, 4)
    assert isinstance(schedule.inner, lr_scheduler.OneCycleLR)
    momenta = []
    for _ in range(12):
        momenta.append(opt.param_groups[0]["momentum"])
        opt.step()
        schedule.step()
    assert min(momenta) < 0.9 and momenta[0] > momenta[2]  # one-cycle's momentum dips as the rate rises


def test_an_annealed_schedule_reports_the_rates_it_set_for_every_group():
    from torch.optim import lr_scheduler

    from mnist_arch.optim import AnnealedEnd

    opt = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.4},
                           {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.2}])
    annealed = AnnealedEnd(lr_scheduler.LambdaLR(opt, lambda step: 1.0), total_steps=4, anneal_steps=2)
    seen = [annealed.get_last_lr()]
    for _ in range(3):
        opt.step()
        annealed.step()
        seen.append(annealed.get_last_lr())
    # steps 0-2 at the whole rate, step 3 of 4 at half of it (the last 2 steps ramp down)
    assert [lr for lrs in seen for lr in lrs] == pytest.approx([0.4, 0.2, 0.4, 0.2, 0.4, 0.2, 0.2, 0.1])
    assert seen[-1] == [g["lr"] for g in opt.param_groups] and annealed.factor(4) == annealed.factor(9) == 0.0

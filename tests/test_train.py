import copy
import json

import pytest
import torch
import torch.nn.functional as F

import mnist_arch.trainer as trainer
from mnist_arch.errors import ConfigError, OverBudgetError
from mnist_arch.model import build_model
from mnist_arch.trainer import fit, summarize

from .support import compose, run_cli

SMALL = ("data.train_subset=2000", "data.test_subset=1000", "trainer.epochs=2", "trainer.threads=1", "trainer.progress=false")
# where only sameness is asserted (seeds, layouts, the average), not how well it learns: a quarter of the cost
SAME = (*SMALL, "data.train_subset=500", "data.test_subset=300")


def test_same_seed_same_metrics_on_cpu():
    first = fit(compose(*SAME, "seed=7"))
    second = fit(compose(*SAME, "seed=7"))
    other = fit(compose(*SAME, "seed=8"))
    strip = lambda r: [{k: v for k, v in h.items() if "seconds" not in k} for h in r["history"]]
    assert strip(first) == strip(second)
    assert strip(first) != strip(other)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("preset", ["s4", "tiny", "padded", "plain"])
def test_channels_last_computes_the_plain_paths_function_and_gradients(preset):
    # Dropout off: its masks are drawn in memory order, so the two layouts drop different units
    # (same distribution); everything else must be the same function with the same gradients.
    cfg = compose(f"model={preset}", "model.dropout.rate=0.0")
    torch.manual_seed(0)
    plain = build_model(cfg.model)
    fast = copy.deepcopy(plain).to(memory_format=torch.channels_last)
    exact = copy.deepcopy(plain).double()
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    outputs = []
    for model, inputs in ((plain, x), (fast, x), (exact, x.double())):  # one step each: same BN running stats
        outputs.append(model(inputs))
        F.cross_entropy(outputs[-1], y).backward()
    assert relative_error(outputs[1], outputs[2]) < 1e-5
    for (name, p), q, r in zip(plain.named_parameters(), fast.parameters(), exact.parameters()):
        assert relative_error(p.grad, r.grad) < 1e-4, name  # the plain path: float32 rounding (~3e-6 measured)
        # oneDNN's NHWC weight-gradient kernels accumulate less exactly: up to 1e-2 measured (s4 on
        # 2 threads). A wrong layout anywhere would be off by order 1.
        assert relative_error(q.grad, r.grad) < 5e-2, name
    for model in (plain, fast):
        model.eval()
    assert relative_error(fast(x), plain(x)) < 1e-5  # evaluation: the same numbers


def test_channels_last_trains_like_the_plain_path():
    fast = fit(compose(*SAME, "seed=3", "trainer.channels_last=true"))
    plain = fit(compose(*SAME, "seed=3"))
    # Same seed, same batches; rounding and the layout-ordered dropout masks separate them, so the
    # epoch figures agree closely but not bit for bit.
    for f, p in zip(fast["history"], plain["history"]):
        assert f["train_loss"] == pytest.approx(p["train_loss"], rel=1e-2)
    assert fast["n_params"] == plain["n_params"] and fast["epochs_run"] == plain["epochs_run"] == 2


def test_result_holds_every_documented_metric():
    result = fit(compose(*SMALL, "data.val_size=500", "objective.metric=min_last_k_val_acc", "objective.last_k=2"))
    assert result["n_params"] == 7988 and result["device"] == "cpu" and result["epochs_run"] == 2
    assert [h["epoch"] for h in result["history"]] == [1, 2]
    for record in result["history"]:
        assert set(record) >= {"train_loss", "train_acc", "test_loss", "test_acc", "val_loss", "val_acc", "lr", "seconds", "eval_seconds"}
    accs = [h["test_acc"] for h in result["history"]]
    assert result["best_test_acc"] == max(accs) and result["final_test_acc"] == accs[-1]
    assert result["objective"] == min(h["val_acc"] for h in result["history"])
    assert result["min_last_k_test_acc"] == min(accs)
    vals = [h["val_acc"] for h in result["history"]]
    assert result["best_val_acc"] == max(vals) and result["min_last_k_val_acc"] == min(vals)


def test_summary_metrics_of_a_history():
    history = [{"epoch": e, "test_acc": a} for e, a in enumerate([98.0, 99.41, 99.3, 99.41], 1)]
    assert summarize(history, 99.4, 3) == {
        "best_test_acc": 99.41, "final_test_acc": 99.41, "min_last_k_test_acc": 99.3, "best_epoch": 2,
        "epoch_reached_target": 2, "epochs_run": 4, "target_acc": 99.4,
    }
    assert summarize(history, 99.5, 3)["epoch_reached_target"] is None
    # the window is the last k epochs, exactly: the dip at epoch 1 is outside it for k=3, inside for k=4
    assert summarize(history, 99.4, 2)["min_last_k_test_acc"] == 99.3
    assert summarize(history, 99.4, 4)["min_last_k_test_acc"] == 98.0
    with_val = [{**h, "val_acc": v} for h, v in zip(history, [97.0, 99.0, 98.5, 98.9])]
    s = summarize(with_val, 99.4, 3)
    assert (s["best_val_acc"], s["final_val_acc"], s["min_last_k_val_acc"]) == (99.0, 98.9, 98.5)


def test_over_budget_model_stops_before_any_data_is_loaded(monkeypatch):
    def no_data(*args, **kwargs):
        raise AssertionError("data loaded for an over-budget model")

    monkeypatch.setattr(trainer, "load_mnist", no_data)
    with pytest.raises(OverBudgetError) as info:
        fit(compose("model=wide", "budget.max_params=10000"))
    assert info.value.n_params == 16454
    assert "model has 16,454 parameters, over budget.max_params=10,000" in str(info.value)


def test_a_callback_can_stop_the_run():
    class StopAfterFirst:
        def __init__(self):
            self.seen = []

        def on_epoch_end(self, epoch, record):
            self.seen.append((epoch, record["test_acc"]))
            return epoch >= 1

    callback = StopAfterFirst()
    result = fit(compose(*SMALL, "trainer.epochs=3"), callbacks=[callback])
    assert result["epochs_run"] == 1 and result["stopped_early"]
    assert result["stop_reason"] == "stopped by StopAfterFirst after epoch 1"
    assert callback.seen == [(1, result["history"][0]["test_acc"])]


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.epochs=0", "trainer.epochs=0 must be >= 1"),
        ("trainer.batch_size=0", "trainer.batch_size=0 must be >= 1"),
        ("budget.max_params=0", "budget.max_params=0 must be a positive number"),
        ("objective.metric=best_val_acc", "needs a validation split: set data.val_size > 0"),
        ("objective.metric=accuracy", "objective.metric='accuracy' is not one of: best_test_acc"),
        ("optim.name=rmsprop", "optim.name='rmsprop' is not one of: sgd, adam, adamw"),
        ("schedule.name=linear", "schedule.name='linear' is not one of: onecycle, step, cosine, none"),
        ("trainer.device=tpu", "trainer.device='tpu' is not one of: auto, cpu, cuda, cuda:N"),
    ],
)
def test_bad_training_config_is_refused(override, message):
    with pytest.raises(ConfigError) as info:
        fit(compose(*SMALL, override))
    assert message in str(info.value)


@pytest.mark.slow
def test_one_epoch_through_the_command_line_learns(tmp_path):
    proc = run_cli(
        ["mnist_arch.train", "data.train_subset=6000", "data.test_subset=2000", "trainer.epochs=1",
         "optim=adam", "schedule=none", f"hydra.run.dir={tmp_path}/run"],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n_params"] == 7988 and metrics["epochs_run"] == 1
    assert metrics["final_test_acc"] > 80  # chance is 10%
    assert "epoch  1/1" in proc.stderr + proc.stdout
    assert (tmp_path / "run" / ".hydra" / "config.yaml").is_file()


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["budget.max_params=5000"], "model has 7,988 parameters, over budget.max_params=5,000"),
        (["trainer.epochs=0"], "trainer.epochs=0 must be >= 1"),
        (["model.norm.placement=batchnorm"], "model.norm.placement='batchnorm' is not one of: bn_relu, relu_bn, none"),
    ],
)
def test_command_line_errors_are_one_line_with_nonzero_exit(tmp_path, args, message):
    proc = run_cli(["mnist_arch.train", *args, f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.slow
def test_summary_command_prints_the_layer_table(tmp_path):
    proc = run_cli(["mnist_arch.summary", "model=s4"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["layer", "kind", "output", "(CxHxW)", "params", "RF"]
    assert any(row.split()[:5] == ["block1.conv3.conv", "Conv2d", "20x22x22", "1,800", "7"] for row in lines)
    assert any(row.split()[:5] == ["head.gap", "AdaptiveAvgPool2d", "16x1x1", "0", "28"] for row in lines)
    assert "total parameters: 7,988" in proc.stdout
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_summary_rows_say_each_layers_output_parameters_and_receptive_field(capsys, monkeypatch):
    """In process, what the command above prints: the receptive field grows by (k - 1) * jump at each conv
    and pool (the jump doubling after the pool), and the global average sees its whole 5x5 input."""
    from mnist_arch.summary import main

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    main(["model=s4", "budget.max_params=7988"])
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:-3]}
    assert list(rows)[:3] == ["block1.conv1.conv", "block1.conv1.bn", "block1.conv1.relu"] and len(rows) == 26
    assert rows["block1.conv1.conv"] == ["Conv2d", "10x26x26", "90", "3"]
    assert rows["block1.conv3.conv"] == ["Conv2d", "20x22x22", "1,800", "7"]
    assert rows["pool1"] == ["MaxPool2d", "20x11x11", "0", "8"]
    assert rows["transition1.conv"] == ["Conv2d", "10x11x11", "200", "8"]  # 1x1: no growth
    assert rows["block2.conv1.conv"] == ["Conv2d", "10x9x9", "900", "12"]  # 3x3 after the pool: + 2 * 2
    assert rows["block2.conv3.relu"] == ["ReLU", "16x5x5", "0", "20"]
    assert rows["head.gap"] == ["AdaptiveAvgPool2d", "16x1x1", "0", "28"]
    assert rows["head.flatten"] == ["Flatten", "10", "0", "28"]
    assert out.splitlines()[-2:] == ["total parameters: 7,988", "budget.max_params: 7,988 (within budget)"]
    main(["model=s4", "budget.max_params=7987"])
    assert capsys.readouterr().out.splitlines()[-1] == "budget.max_params: 7,987 (OVER budget)"
    main(["model=s4", "budget.max_params=null"])
    assert capsys.readouterr().out.splitlines()[-1] == "total parameters: 7,988"
    main(["--help"])
    assert capsys.readouterr().out.startswith("``mnist-summary``: the layers of a model config")
    with pytest.raises(SystemExit) as exit_:
        main(["model.head.kind=fc"])
    assert exit_.value.code == 1
    assert capsys.readouterr().err.startswith("mnist-summary: model.head.kind='fc' is not one of")


def test_ema_evaluates_the_weight_average_and_a_bad_decay_is_refused():
    plain = fit(compose(*SAME, "seed=3"))
    averaged = fit(compose(*SAME, "seed=3", "trainer.ema=0.9"))
    # the same training steps (the average never feeds back), evaluated on other weights
    assert [h["train_loss"] for h in averaged["history"]] == [h["train_loss"] for h in plain["history"]]
    assert [h["test_acc"] for h in averaged["history"]] != [h["test_acc"] for h in plain["history"]]
    off = fit(compose(*SAME, "seed=3", "trainer.ema=0"))  # decay 0 averages nothing: the plain model, as a sweep choice
    assert [h["test_acc"] for h in off["history"]] == [h["test_acc"] for h in plain["history"]]
    for bad in ("1.0", "-0.5"):
        with pytest.raises(ConfigError, match=rf"trainer.ema={float(bad)} must be a decay in \[0, 1\)"):
            fit(compose(*SAME, f"trainer.ema={bad}"))


def test_the_weight_average_averages_the_batchnorm_statistics_with_the_weights():
    """What is evaluated must carry statistics of the averaged weights, not the ones it was made with."""
    from mnist_arch.trainer import train_step, training_parts

    cfg = compose("model=s4", "trainer.ema=0.5", "trainer.ema_warmup=false")
    torch.manual_seed(0)
    model = build_model(cfg.model).train()
    opt, schedule, average = training_parts(model, cfg, steps_per_epoch=3)
    before = average.module.block1.conv1.bn.running_mean.clone()
    for _ in range(3):
        train_step(model, opt, schedule, average, torch.randn(8, 1, 28, 28) + 1, torch.randint(0, 10, (8,)))
    mine, theirs = average.module.block1.conv1.bn.running_mean, model.block1.conv1.bn.running_mean
    assert not torch.equal(mine, before) and not torch.equal(mine, theirs)  # moved, and averaged (decay 0.5)
    assert training_parts(model, compose("model=s4", "trainer.ema=0"), 3)[2] is None


def test_evaluation_is_in_eval_mode_deterministic_and_leaves_batchnorm_statistics_alone():
    """Dropout off and BatchNorm on its running statistics at test time, whatever mode training left."""
    cfg = compose("model=s4", "model.dropout.rate=0.5")
    torch.manual_seed(0)
    model = build_model(cfg.model)
    x, y = torch.randn(300, 1, 28, 28), torch.randint(0, 10, (300,))
    model.train()
    with torch.no_grad():  # a few training-mode passes: running statistics away from their initial values
        for _ in range(3):
            model(x)
    model.train()  # as the training loop leaves it
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    first = trainer.evaluate(model, x, y, batch_size=100)
    second = trainer.evaluate(model, x, y, batch_size=7)  # other batch sizes: the same per-image function
    assert first["acc"] == second["acc"] and first["loss"] == pytest.approx(second["loss"], rel=1e-5)
    assert all(torch.equal(buffers[k], v) for k, v in model.state_dict().items())  # statistics untouched
    reference = copy.deepcopy(model).eval()
    with torch.no_grad():
        logits = reference(x)
    assert first["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert first["acc"] == pytest.approx(100.0 * (logits.argmax(1) == y).float().mean().item())


def test_the_step_schedule_decays_every_step_size_epochs_not_batches():
    from mnist_arch.optim import build_schedule

    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.1, momentum=0.9)
    schedule = build_schedule(opt, compose("schedule=step").schedule, epochs=20, steps_per_epoch=50)
    rates = []
    for _ in range(20 * 50):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    per_epoch = rates[::50]  # the rate each epoch starts with: 0.1 for epochs 1-6, 0.01 for 7-12, ...
    assert per_epoch == pytest.approx([0.1] * 6 + [0.01] * 6 + [0.001] * 6 + [0.0001] * 2)
    assert len(set(rates[:300])) == 1  # constant within the first 6 epochs, batch after batch


def test_a_run_whose_loss_diverges_stops_after_that_epoch_and_says_why():
    result = fit(compose(*SMALL, "trainer.epochs=5", "optim.lr=1e12", "schedule=none"))
    assert result["epochs_run"] == 1 and result["stopped_early"]
    assert result["stop_reason"] == "train loss is not finite (diverged)"


def test_each_seed_sees_its_own_batch_order_and_the_same_seed_the_same(monkeypatch):
    """Repeats over seeds are only worth their cost if the seed moves the data stream, not just the init."""
    seen = {}
    real_augment = trainer.augment

    def recording(images, cfg, generator):
        seen.setdefault(current, images.flatten(1).sum(1)[:8].tolist())  # the first batch's first images
        return real_augment(images, cfg, generator)

    monkeypatch.setattr(trainer, "augment", recording)
    for current in ("seed1", "seed2", "seed1 again"):
        fit(compose(*SAME, "trainer.epochs=1", f"seed={current.split()[0][4:]}"))
    assert seen["seed1"] != seen["seed2"]
    assert seen["seed1"] == seen["seed1 again"]


@pytest.mark.parametrize("given, seen", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_torch_threads_sleep_when_idle_unless_the_user_says_otherwise(given, seen):
    """mnist_arch sets OMP_WAIT_POLICY before torch loads (spinning threads slowed a busy machine's
    training several times over); a value the user set is kept."""
    import os
    import subprocess
    import sys

    from .support import REPO

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    env["PYTHONPATH"] = str(REPO)
    code = "import mnist_arch, os, sys; print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.stdout.split() == [seen, "True"], out.stderr

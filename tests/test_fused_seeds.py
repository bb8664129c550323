"""benchmarks/fused_seeds.py's fused model: K nets side by side compute, and learn, what each would alone."""
import re

import pytest
import torch
import torch.nn.functional as F

from benchmarks.fused_seeds import check_fused
from mnist_arch.errors import ConfigError
from mnist_arch.fused import fuse
from mnist_arch.trainer import train_step
from mnist_arch.model import build_model

from .support import compose


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("overrides", [("+experiment=small_end_t21",), ("model=plain",),
                                       ("+experiment=small_end_t21", "model/conv=separable")])
def test_the_fused_model_computes_each_nets_logits(k, overrides):
    check_fused(compose(*overrides), k)  # asserts, BatchNorm statistics included


def test_a_fused_step_moves_each_copy_as_its_own_step_would():
    """Training mode (BatchNorm on batch statistics, per channel: per copy), no dropout, plain SGD."""
    cfg = compose("+experiment=small_end_t21", "model.dropout.rate=0")
    nets = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        nets.append(build_model(cfg.model).train())
    fused = fuse(nets).train()
    x, y = torch.randn(2, 6, 1, 28, 28), torch.randint(0, 10, (2, 6))
    lr = 0.1
    for net, xs, ys in zip(nets, x, y):
        F.cross_entropy(net(xs), ys).backward()
    opt = torch.optim.SGD(fused.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    train_step(fused, opt, schedule, None, x.squeeze(2).permute(1, 0, 2, 3), y.T)
    for (name, p), pairs in zip(fused.named_parameters(), zip(*(net.parameters() for net in nets))):
        want = torch.cat([q - lr * q.grad for q in pairs])
        assert torch.allclose(p, want, atol=1e-5), name


def test_thirty_fused_steps_in_double_precision_are_each_copys_own_steps_schedule_momentum_and_average_included():
    """In float64 the rounding that float32 training amplifies stays far below the tolerance, so the copies
    must match step for step: one-cycle schedule, Nesterov momentum, BatchNorm statistics, warmed-up average,
    label smoothing."""
    from torch.optim.swa_utils import AveragedModel

    from mnist_arch.optim import build_optimizer, build_schedule
    from mnist_arch.trainer import ema_decays

    cfg = compose("+experiment=small_end_t21", "model.dropout.rate=0")
    average = lambda m: AveragedModel(m, multi_avg_fn=ema_decays(0.999, True), use_buffers=True)
    runs = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        net = build_model(cfg.model).double().train()
        opt = build_optimizer(net.parameters(), cfg.optim)
        runs.append((net, opt, build_schedule(opt, cfg.schedule, 2, 15), average(net)))
    fused = fuse([run[0] for run in runs]).train()
    opt = build_optimizer(fused.parameters(), cfg.optim)
    fused_run = (fused, opt, build_schedule(opt, cfg.schedule, 2, 15), average(fused))
    torch.manual_seed(0)
    for _ in range(30):
        x, y = torch.randn(2, 8, 1, 28, 28, dtype=torch.float64), torch.randint(0, 10, (2, 8))
        for (net, opt, schedule, avg), xs, ys in zip(runs, x, y):
            train_step(net, opt, schedule, avg, xs, ys, label_smoothing=0.1)
        train_step(*fused_run, x.squeeze(2).permute(1, 0, 2, 3), y.T, label_smoothing=0.1)
    for mine, theirs in ((fused_run[0], [run[0] for run in runs]), (fused_run[3].module, [run[3].module for run in runs])):
        for (name, p), pairs in zip(mine.state_dict().items(), zip(*(t.state_dict().values() for t in theirs))):
            want = pairs[0] if name.endswith("num_batches_tracked") else torch.cat(pairs)
            assert torch.allclose(p, want, rtol=1e-9, atol=1e-9), name


def test_fuse_keeps_each_convs_stride_padding_and_dilation_and_each_batchnorms_settings():
    from torch import nn

    torch.manual_seed(0)
    convs = [nn.Conv2d(3, 4, 3, stride=2, padding=1, dilation=2) for _ in range(2)]
    fused = fuse(convs)
    x = torch.randn(5, 3, 9, 9)
    assert torch.allclose(fused(torch.cat([x, 2 * x], 1)), torch.cat([convs[0](x), convs[1](2 * x)], 1), atol=1e-6)
    norms = [nn.BatchNorm2d(4, eps=0.5, momentum=0.3, affine=False) for _ in range(2)]
    fused = fuse(norms)
    assert (fused.num_features, fused.eps, fused.momentum, fused.affine) == (8, 0.5, 0.3, False)
    x = torch.randn(6, 4, 3, 3) * 3 + 1
    y = fused(torch.cat([x, -x], 1))  # training mode: batch statistics, running statistics moved by 0.3
    assert torch.allclose(y, torch.cat([norms[0](x), norms[1](-x)], 1), atol=1e-6)
    assert torch.allclose(fused.running_mean, torch.cat([norms[0].running_mean, norms[1].running_mean]))


def test_the_fused_model_shares_no_module_with_the_nets_it_was_made_from():
    cfg = compose("+experiment=small_end_t21")
    nets = [build_model(cfg.model) for _ in range(2)]
    fused = fuse(nets)
    theirs = {id(m) for net in nets for m in net.modules()}
    assert not any(id(m) in theirs for m in fused.modules())
    seen = []
    fused.block1.dropout.register_forward_hook(lambda *args: seen.append(1))
    nets[0](torch.zeros(1, 1, 28, 28))
    assert seen == []  # a hook on the fused model is not one on a net it was made from


def test_a_linear_head_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"^Linear has no fused form here; fused seeds need conv heads "
                                          r"\(model.head.kind=gap_conv or conv_gap\)$"):
        fuse([build_model(compose("model=padded").model) for _ in range(2)])


TINY = ("+experiment=small_end_t21", "model.dropout.rate=0", "data.val_size=0", "data.train_subset=64",
        "data.test_subset=200", "trainer.epochs=2", "trainer.batch_size=32", "trainer.threads=1")


def test_each_fused_copy_starts_as_its_seeds_own_run():
    """Same initial weights, shuffle and augmentation per seed: the first epoch's training loss and accuracy
    (taken before each step) match the seed's own run until rounding has grown (two steps here)."""
    from mnist_arch.fused import fit_fused
    from mnist_arch.trainer import fit

    fused = fit_fused(compose(*TINY, "trainer.epochs=1", "trainer.batch_size=64"), [3, 5])
    for seed, result in zip((3, 5), fused):
        alone = fit(compose(*TINY, "trainer.epochs=1", "trainer.batch_size=64", f"seed={seed}"))
        (mine,), (theirs,) = result["history"], alone["history"]
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], abs=1e-5)
        assert mine["train_acc"] == theirs["train_acc"] and abs(mine["test_acc"] - theirs["test_acc"]) <= 0.5
        assert result["n_params"] == alone["n_params"] == 4938 and result["fused_seeds"] == [3, 5]
    assert fused[0]["history"][0]["train_loss"] != fused[1]["history"][0]["train_loss"]  # two seeds, two runs


@pytest.mark.parametrize("extra", [(), ("trainer.ema=0", "trainer.label_smoothing=0.2")], ids=["average", "smoothing"])
def test_a_fused_run_of_one_seed_is_fits_run_of_that_seed_record_for_record(extra):
    """One copy (no dropout: its masks are the one draw fused runs do not share with fit): the same steps, the same
    evaluation (of the weight average, or of the net without one) on test and validation splits, the same record
    and result, to rounding."""
    from mnist_arch.fused import fit_fused
    from mnist_arch.trainer import fit

    overrides = (*TINY, "data.val_size=16", *extra)  # 48 training images: two steps an epoch
    (fused,) = fit_fused(compose(*overrides), [3])
    alone = fit(compose(*overrides, "seed=3"))
    assert set(fused) == {*alone, "fused_seeds"} and fused["fused_seeds"] == [3]
    for mine, theirs in zip(fused["history"], alone["history"], strict=True):
        assert list(mine) == list(theirs)  # epoch, train, test, val, lr, seconds, eval_seconds: in fit's order
        for key in ("train_loss", "test_loss", "val_loss"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-5), key
        for key in ("epoch", "train_acc", "test_acc", "val_acc", "lr"):
            assert mine[key] == theirs[key], key
        assert 0 < mine["eval_seconds"] < mine["seconds"] < fused["seconds"]
    timeless = lambda result: {k: v for k, v in result.items() if k not in ("history", "seconds", "fused_seeds")}
    assert timeless(fused) == timeless(alone)  # device, summary, stopped_early, stop_reason, objective
    assert fused["device"] == "cpu" and fused["stopped_early"] is False and fused["stop_reason"] is None
    assert sum(h["seconds"] for h in fused["history"]) < fused["seconds"] < 600


def test_the_command_writes_each_seeds_metrics_and_config_as_a_run_of_its_own_would(tmp_path, capsys, monkeypatch):
    import json
    import logging

    from omegaconf import OmegaConf

    from mnist_arch.fused import main

    monkeypatch.setattr(logging.root, "handlers", [])  # as in a fresh process: the command sets up its log lines
    monkeypatch.setattr(logging.root, "level", logging.WARNING)
    out = tmp_path / "results" / "fused"  # folders made as needed
    main(["--out", str(out), "--seeds", "3", "5", "--", *TINY])
    lines = [line for line in capsys.readouterr().err.splitlines() if "][mnist_arch.fused][" in line]  # not the data's
    assert re.fullmatch(r"\[[-\d]+ [:,\d]+\]\[mnist_arch.fused\]\[INFO\] - training 2 fused copies of 4,938 parameters "
                        r"\(seeds 3, 5\) on cpu: 2 epochs of 2 steps", lines[0]), lines[0]
    log = [line.split("] - ", 1)[1] for line in lines]
    epoch_line = r"epoch  (\d)/2  test acc (\d+\.\d\d)% (\d+\.\d\d)%  lr (\d\.\d{4})  (\d+\.\d)s"
    epochs = [re.fullmatch(epoch_line, line).groups() for line in log[1:3]]
    for seed in (3, 5):
        text = (out / f"seed{seed}.metrics.json").read_text()
        metrics = json.loads(text)
        assert text == json.dumps(metrics, indent=2)  # as seed_runs writes a run's metrics
        for (epoch, *accs, lr, seconds), h in zip(epochs, metrics["history"], strict=True):
            assert (epoch, accs[(3, 5).index(seed)], lr, seconds) == \
                (str(h["epoch"]), f"{h['test_acc']:.2f}", f"{h['lr']:.4f}", f"{h['seconds']:.1f}")
        last = metrics["min_last_k_test_acc"]
        assert (f"seed {seed}: best test acc {metrics['best_test_acc']:.2f}% (epoch {metrics['best_epoch']}), "
                f"min of the last 3 epochs {last:.2f}%") in log  # the experiment's last_k
        assert metrics["seed"] == seed and metrics["overrides"] == [*TINY, f"seed={seed}"]
        assert [h["epoch"] for h in metrics["history"]] == [1, 2] and metrics["epochs_run"] == 2
        assert metrics["objective_metric"] == "min_last_k_test_acc"  # the experiment's objective
        assert metrics["objective"] == metrics["min_last_k_test_acc"] == min(h["test_acc"] for h in metrics["history"])
        assert metrics["best_test_acc"] == max(h["test_acc"] for h in metrics["history"])
        saved = OmegaConf.load(out / f"seed{seed}.config.yaml")
        assert OmegaConf.to_container(saved) == OmegaConf.to_container(compose(*TINY, f"seed={seed}"))
    for given in ("seed=4", "+seed=4", "++seed=4"):  # the seeds are --seeds
        with pytest.raises(SystemExit):
            main(["--out", str(tmp_path), "--seeds", "3", "--", *TINY, given])
        assert "error: give the seeds with --seeds, not seed=" in capsys.readouterr().err


def test_the_commands_help_says_what_it_does_and_the_output_folder_is_required(capsys):
    from mnist_arch.fused import main

    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "Several seeds of one net trained as one model" in out
    assert "--out OUT folder for seedS.metrics.json / seedS.config.yaml" in out
    assert "overrides mnist-train overrides (no seed=: the seeds are --seeds)" in out
    assert "--seeds SEEDS [SEEDS ...] the seeds to train together, each once (distinct)" in out
    with pytest.raises(SystemExit) as exit_:
        main(["--seeds", "3", "--", *TINY])
    assert exit_.value.code == 2 and "the following arguments are required: --out" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["--out", "x", "--", *TINY])
    assert exit_.value.code == 2 and "the following arguments are required: --seeds" in capsys.readouterr().err


@pytest.mark.parametrize("overrides, seeds, message", [
    ((), [3, 3], r"^fused seeds \[3, 3\]: give one or more distinct seeds$"),
    ((), [], r"^fused seeds \[\]: give one or more distinct seeds$"),
    (("trainer.bn_recompute=10",), [3, 5],
     "^trainer.bn_recompute is not supported by fused seeds; train these seeds one at a time$"),
    (("tracking=tensorboard",), [3, 5], "^tracking=tensorboard: fused seeds are not tracked; leave tracking=none$"),
    (("budget.max_params=4000",), [3, 5], "4,938"),
])
def test_what_fused_seeds_cannot_do_is_refused_before_any_data_is_loaded(overrides, seeds, message, monkeypatch):
    from mnist_arch import fused
    from mnist_arch.errors import OverBudgetError

    monkeypatch.setattr(fused, "load_mnist", lambda *a: pytest.fail("data loaded"))
    with pytest.raises((ConfigError, OverBudgetError), match=message):
        fused.fit_fused(compose(*TINY, *overrides), seeds)


class DataLoaded(Exception):
    pass


@pytest.mark.parametrize("threads, set_to", [("trainer.threads=1", [1]), ("trainer.threads=null", [])])
def test_one_seed_is_a_fused_run_of_one_and_its_thread_count_is_set_on_the_cpu(threads, set_to, monkeypatch):
    from mnist_arch import fused

    def load(*args):
        raise DataLoaded  # everything before the data checked and set

    calls = []
    monkeypatch.setattr(fused, "load_mnist", load)
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    with pytest.raises(DataLoaded):
        fused.fit_fused(compose(*TINY, threads), [3])
    assert calls == set_to
    calls.clear()
    monkeypatch.setattr(fused, "resolve_device", lambda name: torch.device("cuda"))
    with pytest.raises(DataLoaded):
        fused.fit_fused(compose(*TINY, threads), [3, 5])
    assert calls == []  # a GPU run leaves torch's CPU threads alone


def test_seed_runs_fuses_the_seeds_in_groups_and_runs_the_rest_alone(tmp_path):
    import json

    from benchmarks.seed_runs import run_seeds

    run_seeds(list(TINY[:-1]), [3, 5, 7], 2, tmp_path, fuse=2)
    runs = {seed: json.loads((tmp_path / f"seed{seed}.metrics.json").read_text()) for seed in (3, 5, 7)}
    assert [runs[s].get("fused_seeds") for s in (3, 5, 7)] == [[3, 5], [3, 5], None]
    assert sorted(p.name for p in tmp_path.glob("*.config.yaml")) == [f"seed{s}.config.yaml" for s in (3, 5, 7)]

"""The tuning protocol: search spaces, budgets, failures, resumption, shared studies, outputs."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from benchmark.tune import (
    COUNTED,
    base_optimizer_args,
    counted_trials,
    distributions,
    fail_interrupted,
    open_storage,
    run_trials,
    tuning_stack,
)
from benchmark.tune_outputs import best_fragment, plot_sensitivity, write_trials_csv
from optim import get_optimizer_spec
from optim.search_space import Choice, LogUniform

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("tune_worker.py")
optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study(storage, name="s", seed=0):
    sampler = optuna.samplers.QMCSampler(scramble=True, seed=seed, warn_independent_sampling=False, warn_asynchronous_seeding=False)
    return optuna.create_study(study_name=name, storage=storage, sampler=sampler, direction="maximize", load_if_exists=True)


def test_distributions_follow_the_registry():
    for name in ("sgd", "adam", "clipped_sgd", "clipped_sstm"):
        space = get_optimizer_spec(name).search_space
        dists = distributions(name)
        assert set(dists) == set(space)
        for key, dim in space.items():
            if isinstance(dim, Choice):
                assert dists[key] == CategoricalDistribution(dim.options)
            else:
                assert dists[key] == FloatDistribution(dim.low, dim.high, log=isinstance(dim, LogUniform))


def test_open_storage_kinds(tmp_path):
    assert isinstance(open_storage(None, tmp_path), optuna.storages.RDBStorage)
    assert (tmp_path / "optuna.db").exists()
    assert isinstance(open_storage(f"journal:{tmp_path / 'j' / 'tune.log'}", tmp_path), optuna.storages.JournalStorage)
    assert isinstance(open_storage(str(tmp_path / "x.journal"), tmp_path), optuna.storages.JournalStorage)
    with pytest.raises(ValueError, match="Invalid --storage"):
        open_storage("no-scheme.db", tmp_path)


def test_budget_counts_failures_and_the_trials_are_quasi_random(tmp_path):
    study = _study(open_storage(None, tmp_path))
    calls = []

    def objective(trial):
        calls.append(trial.params["lr"])
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        if len(calls) == 3:
            return math.nan
        return -abs(math.log10(trial.params["lr"]) + 2)

    ran = run_trials(study, 6, distributions("sgd"), objective, log=lambda s: None)
    assert ran == 6 and counted_trials(study) == 6
    outcomes = [t.user_attrs["outcome"] for t in study.trials]
    assert outcomes == ["complete", "crashed", "diverged", "complete", "complete", "complete"]
    assert [t.state for t in study.trials[1:3]] == [TrialState.FAIL, TrialState.FAIL]
    assert "out of memory" in study.trials[1].user_attrs["error"]
    space = get_optimizer_spec("sgd").search_space["lr"]
    assert all(space.low <= lr <= space.high for lr in calls) and len(set(calls)) == 6
    # a rerun with the budget filled runs nothing; a larger budget tops it up (resume)
    assert run_trials(study, 6, distributions("sgd"), objective, log=lambda s: None) == 0
    assert run_trials(study, 8, distributions("sgd"), objective, log=lambda s: None) == 2
    assert counted_trials(study) == 8


def test_a_trial_of_a_dead_process_is_marked_failed_not_counted(tmp_path):
    study = _study(open_storage(None, tmp_path))
    orphan = study.ask(distributions("sgd"))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True).stdout.strip()
    import socket

    orphan.set_user_attr("worker", f"{socket.gethostname()}:{dead}")
    orphan.set_user_attr("alive_at", 1e18)  # fresh: only the dead pid tells
    assert fail_interrupted(study, stale_after=900) == [orphan.number]
    frozen = study.trials[orphan.number]
    assert frozen.state == TrialState.FAIL and frozen.user_attrs["outcome"] == "interrupted"
    assert "interrupted" not in COUNTED
    assert run_trials(study, 2, distributions("sgd"), lambda t: 0.0, log=lambda s: None) == 2
    assert counted_trials(study) == 2 and len(study.trials) == 3  # the interrupted one is kept, failed


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_two_processes_share_one_study(tmp_path, kind):
    storage = f"journal:{tmp_path / 'tune.log'}" if kind == "journal" else f"sqlite:///{tmp_path / 'tune.db'}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, str(WORKER), storage, "shared", "8"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    ran = [int(o[0].strip().splitlines()[-1]) for o in outs]
    study = _study(open_storage(storage, tmp_path), "shared")
    complete = [t for t in study.trials if t.user_attrs.get("outcome") == "complete"]
    assert len(complete) == 8 == sum(ran)  # exactly the budget, between the two
    assert len({t.user_attrs["worker"] for t in complete}) == 2  # both processes worked on it
    assert len({t.params["lr"] for t in complete}) == 8  # distinct quasi-random points
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]


def test_outputs_config_csv_and_plot(tmp_path):
    studies = {}
    for optimizer, peak in (("sgd", -1.0), ("adam", -3.0)):
        study = _study(open_storage(None, tmp_path), f"imagenet-{optimizer}")
        study.set_user_attr("metric", "val/top1")
        run_trials(study, 5, distributions(optimizer), lambda t, p=peak: -((math.log10(t.params["lr"]) - p) ** 2), log=lambda s: None)
        studies[("imagenet", optimizer)] = study
    base = base_optimizer_args(tuning_stack("imagenet", "sgd", "bench"))
    assert base == {"lr": 0.01, "momentum": 0.9}  # the reference sgd.yaml; the old embedded grid is left out
    text = best_fragment(studies[("imagenet", "sgd")], base, "python -m benchmark tune --trials 5", 5)
    fragment = yaml.safe_load(text)
    args = fragment["model"]["init_args"]["optimizer_args"]
    best = studies[("imagenet", "sgd")].best_trial
    assert set(args) == {"lr", "momentum"}  # the whole dict, not only what was tuned
    assert args["lr"] == pytest.approx(best.params["lr"], rel=1e-3) and args["momentum"] == pytest.approx(best.params["momentum"], rel=1e-3)
    assert "held-out tuning split" in text and "--trials 5" in text
    csv_text = write_trials_csv(studies, tmp_path / "trials.csv").read_text().splitlines()
    assert len(csv_text) == 11 and csv_text[0].startswith("dataset,optimizer,study,trial,state,outcome,value")
    assert [p.name for p in plot_sensitivity(studies, tmp_path)] == ["imagenet_sensitivity.png"]


@pytest.mark.embedded
def test_tune_command_end_to_end(tmp_path, embedded_data_root):
    from datamodules.embedded.store import ENV_VAR

    out = tmp_path / "tune"
    args = [
        sys.executable, "-m", "benchmark", "tune", "--datasets", "imagenet", "--optimizers", "adam", "--trials", "1", "--out", str(out), "--",
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        "--data.init_args.train_crop_size", "32", "--data.init_args.val_resize_size", "36", "--data.init_args.val_crop_size", "32",
    ]  # fmt: skip
    env = {**os.environ, ENV_VAR: str(embedded_data_root)}
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "trial 0 [1/1]" in result.stdout
    fragment = yaml.safe_load((out / "configs" / "imagenet" / "embedded_adam.yaml").read_text())
    assert set(fragment["model"]["init_args"]["optimizer_args"]) == {"lr"}
    # trained on the tuning split: the run's config says so
    config = yaml.safe_load(next((out / "runs" / "imagenet" / "adam" / "trial0000" / "csv").glob("*/config.yaml")).read_text())
    assert config["data"]["init_args"]["tune_split"] is True
    assert (out / "trials.csv").exists() and (out / "imagenet_sensitivity.png").exists()


def test_parallel_threads_share_the_budget_and_overlap(tmp_path):
    import threading
    import time

    from benchmark.tune import work_on

    study = _study(open_storage(None, tmp_path))
    lock, running, peak = threading.Lock(), [0], [0]

    def objective(trial):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.3)
        with lock:
            running[0] -= 1
        return -abs(math.log10(trial.params["lr"]) + 2)

    ran = work_on(study, 5, distributions("sgd"), objective, parallel=2)
    assert peak[0] == 2  # two trials ran at once
    assert counted_trials(study) == 5 and ran == 5
    assert sum(t.user_attrs.get("outcome") == "surplus" for t in study.trials) <= 1
    with pytest.raises(ValueError, match="Invalid --parallel"):
        from benchmark.tune import main

        main(["--parallel", "0", "--out", str(tmp_path / "x")])


def test_a_study_refuses_trials_of_other_settings(tmp_path):
    from benchmark.tune import check_settings

    study = _study(open_storage(None, tmp_path))
    check_settings(study, "configs-A")
    run_trials(study, 1, distributions("adam"), lambda trial: 1.0, log=lambda s: None)
    check_settings(study, "configs-A")  # a resume with the same settings
    with pytest.raises(ValueError, match="other configs or arguments.*--study-prefix"):
        check_settings(study, "configs-B")
    assert study.user_attrs["settings"] == "configs-A"

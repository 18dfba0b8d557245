"""A tuning worker for the shared-study test: ``python tune_worker.py STORAGE STUDY N_TRIALS``.

The objective is analytic (no training) so the test checks the protocol alone: several
processes on one study fill exactly its budget.
"""

import math
import sys
import time
from pathlib import Path

import optuna

from benchmark.tune import distributions, open_storage, run_trials


def objective(trial) -> float:
    time.sleep(0.3)  # let the processes interleave
    return -((math.log10(trial.params["lr"]) + 2.0) ** 2)


if __name__ == "__main__":
    storage_spec, name, n_trials = sys.argv[1], sys.argv[2], int(sys.argv[3])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(storage_spec, Path("."))
    sampler = optuna.samplers.QMCSampler(scramble=True, seed=0, warn_independent_sampling=False, warn_asynchronous_seeding=False)
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, direction="maximize", load_if_exists=True)
    print(run_trials(study, n_trials, distributions("sgd"), objective, log=lambda s: None))

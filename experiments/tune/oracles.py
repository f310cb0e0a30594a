"""keras-tuner's three oracles, each handing out the study's variants before its own points."""
from __future__ import annotations

import keras_tuner as kt


class StudyFirst:
    """Oracle mixin: the first "random" points are the study's variants, in order.

    Random search, the Bayesian oracle's initial points and Hyperband's new brackets all draw
    fresh points through ``_random_values``; each study point is handed out once (a point
    already tried, e.g. before a restart, is skipped), then sampling continues as usual.
    """

    initial_points: list = []

    def _random_values(self):
        for _, point in self.initial_points:
            hps = kt.HyperParameters()
            for hp in self.hyperparameters.space:
                hps.merge([hp])
                if hps.is_active(hp):
                    hps.values[hp.name] = point[hp.name] if hp.name in point else hp.default
            if not self._duplicate(hps.values):
                return hps.values
        return super()._random_values()


class RandomOracle(StudyFirst, kt.oracles.RandomSearchOracle):
    pass


class BayesianOracle(StudyFirst, kt.oracles.BayesianOptimizationOracle):
    pass


class HyperbandOracle(StudyFirst, kt.oracles.HyperbandOracle):
    pass


ALGORITHMS = ("random", "bayesian", "hyperband")


def make_oracle(algorithm: str, objective: str, max_trials, epochs: int, seed: int,
                initial_points) -> kt.Oracle:
    """``algorithm``'s oracle; ``initial_points``: [(name, values)] handed out first."""
    objective = kt.Objective(objective, "max" if objective.endswith("accuracy") else "min")
    common = dict(objective=objective, seed=seed, max_consecutive_failed_trials=10)
    if algorithm == "random":
        oracle = RandomOracle(max_trials=max_trials, **common)
    elif algorithm == "bayesian":
        # At least the study points plus two random ones before the Gaussian process.
        oracle = BayesianOracle(max_trials=max_trials,
                                num_initial_points=max(len(initial_points) + 2, 3), **common)
    elif algorithm == "hyperband":
        oracle = HyperbandOracle(max_epochs=epochs, factor=3, **common)
        oracle.max_trials = max_trials  # optional cap on top of Hyperband's own schedule
    else:
        raise ValueError(f"unknown algorithm {algorithm!r}")
    oracle.initial_points = list(initial_points)
    return oracle

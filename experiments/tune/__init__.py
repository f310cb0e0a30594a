"""The study's hyperparameter search with keras-tuner (``python -m experiments.tune``).

``space`` holds the axes and the study's points, ``hypermodel`` the model family trained by
the fit path, ``oracles`` keras-tuner's oracles handing out the study's variants first,
``tuner`` one search's settings and trial folders, ``report`` the leaderboard and its plot,
``cli`` the command.
"""
from .cli import cli_main, hold_lock, main, parse_args, search_from_args
from .hypermodel import DataSource, KwsHyperModel, WarmStart, trial_metrics
from .oracles import BayesianOracle, HyperbandOracle, RandomOracle, StudyFirst, make_oracle
from .report import leaderboard, plot_search, render_leaderboard, write_reports
from .space import (HP_COLUMNS, declare, point_values, study_point, study_points,
                    variant_from_values, which_study_variant)
from .tuner import KwsTuner, Search, export_best, make_tuner, role

__all__ = ["BayesianOracle", "DataSource", "HP_COLUMNS", "HyperbandOracle", "KwsHyperModel",
           "KwsTuner", "RandomOracle", "Search", "StudyFirst", "WarmStart", "cli_main",
           "declare", "export_best", "hold_lock", "leaderboard", "main", "make_oracle",
           "make_tuner", "parse_args", "plot_search", "point_values", "render_leaderboard",
           "role", "search_from_args", "study_point", "study_points", "trial_metrics",
           "variant_from_values", "which_study_variant", "write_reports"]

"""The search's reports: the leaderboard (JSON and Markdown) and the plot of every trial."""
from __future__ import annotations

from pathlib import Path

from kws_tf import artifacts, reports

from .space import HP_COLUMNS, which_study_variant


def leaderboard(oracle) -> list:
    """Every trial, best first (completed trials by the objective, then the rest)."""
    rows = [_row(trial) for trial in oracle.trials.values()]
    done = [r for r in rows if r["status"] == "COMPLETED" and r["score"] is not None]
    done.sort(key=lambda r: r["score"], reverse=oracle.objective.direction == "max")
    rest = sorted((r for r in rows if r not in done), key=lambda r: r["trial_id"])
    for rank, r in enumerate(done + rest, start=1):
        r["rank"] = rank if r in done else None
    return done + rest


def _row(trial) -> dict:
    values = trial.hyperparameters.values
    message = (trial.message or "").strip().splitlines()

    def metric(name):
        return trial.metrics.get_last_value(name) if trial.metrics.exists(name) else None

    params = metric("trainable_params")
    return {
        "trial_id": trial.trial_id, "status": str(trial.status),
        "study_variant": which_study_variant(values),
        **{k: values.get(k) for k in HP_COLUMNS},
        "epochs_budget": values.get("tuner/epochs"),
        "val_accuracy": metric("val_accuracy"), "val_loss": metric("val_loss"),
        "test_accuracy": metric("test_accuracy"),
        "trainable_params": None if params is None else int(params),
        "seconds": metric("seconds"), "epochs_run": metric("epochs_run"),
        "score": trial.score,
        "message": message[-1] if message else None,
    }


def render_leaderboard(rows, search, data) -> str:
    """leaderboard.md: ``search`` (a tuner.Search) says how, ``data`` on what."""
    f = lambda x, fmt: "–" if x is None else format(x, fmt)  # noqa: E731
    lines = [f"# Search leaderboard ({search.algorithm}, objective {search.objective})", "",
             f"Data: `{data}`; up to {search.epochs} epochs per trial, early stopping on "
             f"val_loss (patience {search.patience}), best-val_loss weights evaluated. The study "
             f"points are marked; the study's own figures are on the full dataset.", "",
             "| rank | trial | study | conv blocks | GRU | head | optimizer | lr | wd | batch "
             "| rate | epochs | val acc | val loss | test acc | params | seconds | status |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {f(r['rank'], 'd')} | {r['trial_id']} | {r['study_variant'] or ''} "
            f"| {r['conv_blocks']} | {r['gru_units']} | {r['head']} | {r['optimizer']} "
            f"| {f(r['learning_rate'], '.3g')} | {f(r['weight_decay'], 'g')} | {r['batch_size']} "
            f"| {r['sample_rate']} | {f(r['epochs_run'], '.0f')} "
            f"| {f(r['val_accuracy'], '.4f')} | {f(r['val_loss'], '.4f')} "
            f"| {f(r['test_accuracy'], '.4f')} | {f(r['trainable_params'], ',')} "
            f"| {f(r['seconds'], '.0f')} | {r['status']} |")
    return "\n".join(lines) + "\n\n![validation accuracy per trial](search.png)\n"


def plot_search(path, rows, title) -> None:
    plt = reports.pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for rate, color in ((8000, "C1"), (16000, "C0")):
        pts = [(int(r["trial_id"]), 100 * r["val_accuracy"]) for r in rows
               if r["sample_rate"] == rate and r["val_accuracy"] is not None]
        if pts:
            ax.scatter(*zip(*pts), color=color, label=f"{rate // 1000} kHz", zorder=3)
    for r in rows:
        if r["study_variant"] and r["val_accuracy"] is not None:
            ax.annotate(r["study_variant"], (int(r["trial_id"]), 100 * r["val_accuracy"]),
                        fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set(xlabel="trial", ylabel="validation accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    reports.save_figure(fig, path)


def write_reports(tuner, search, data) -> list:
    """leaderboard.json, leaderboard.md and search.png in the search's project folder."""
    rows = leaderboard(tuner.oracle)
    project = Path(tuner.project_dir)
    artifacts.write_json(project / "leaderboard.json", rows)
    artifacts.write_text(project / "leaderboard.md", render_leaderboard(rows, search, data))
    plot_search(project / "search.png", rows,
                f"{search.algorithm} search, {len(rows)} trials (colour: sample rate)")
    return rows

"""Lead-scoring benchmark: cross-validated AUC on real leads, and what scoring costs.

Trains on X Education's leads with the code `orchestrator score train` runs,
leaving out every column the sales team fills in after first contact, then
times scoring each lead by the rules, the model, and both.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter
from typing import Any

from bench import headline, machine
from leads.imports import open_records
from leads.scoring import (
    Scorer,
    TrainedModel,
    load_config,
    load_model,
    train_model,
)
from leads.scoring.training import BINS, MIN_COUNT, REGULARISATION

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results" / "scoring-latest.md"
CONFIG = REPO_ROOT / "config" / "scoring.yaml"
DATASET = Path("xeducation_leads") / "Leads.csv"
LABEL = "Converted"
PACKAGES = ("scikit-learn", "numpy", "scipy")

# Filled in by the sales team after first contact (the data set's
# PROVENANCE.md): with them the AUC reaches 0.98 and means nothing for a new
# lead. Every `Asymmetrique *` column is added from the header.
AFTER_CONTACT = (
    "Tags",
    "Lead Quality",
    "Lead Profile",
    "Last Activity",
    "Last Notable Activity",
)
IDS = ("Prospect ID", "Lead Number")
BASELINE_AUC = 0.865
TARGET_AUC = 0.90
AUC_LABEL = (
    "Score AUC, `xeducation_leads`, after-contact columns left out, median of the "
    "cross-validation's folds"
)
TIMING_ROUNDS = 3

# What the other models tried while choosing this one scored; fixed text,
# since this command does not rerun them.
DESIGN_NOTES = (
    "Other models measured while choosing this one (same columns, 5 stratified "
    "folds, scikit-learn 1.9.1; not rerun by this command): HistGradientBoosting "
    "0.877 ± 0.003; this logistic regression plus pairwise crosses of origin, "
    "source, occupation and time bins 0.876; a soft vote of the two 0.878. "
    "None reaches 0.90 from the columns a lead brings at first contact.",
    "`Last Activity`, recorded after contact, lifts the logistic regression to "
    "0.899; the leaking columns together reach 0.98. They stay out.",
    "The linear model was kept over the boosted trees, which score a little "
    "higher: each reason is exact (a feature's weight against the average "
    "lead's), and a lead scores in microseconds without calling scikit-learn.",
)


def excluded_columns(path: Path) -> list[str]:
    """The ids and after-contact columns, `Asymmetrique *` as the header has them."""
    with open_records(path) as file:
        headers = list(file.headers)
    asymmetrique = [name for name in headers if name.startswith("Asymmetrique ")]
    return [*AFTER_CONTACT, *asymmetrique, *IDS]


def time_per_lead(
    score: Callable[[Mapping[str, Any]], Any], leads: Sequence[Mapping[str, Any]]
) -> float:
    """Microseconds per lead, the best of a few passes over every lead."""
    best = float("inf")
    for _ in range(TIMING_ROUNDS):
        started = perf_counter()
        for values in leads:
            score(values)
        best = min(best, perf_counter() - started)
    return best / len(leads) * 1e6


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def report(
    argv: list[str],
    path: Path,
    excluded: list[str],
    trained: TrainedModel,
    train_seconds: float,
    load_ms: float,
    timings: list[tuple[str, float]],
) -> str:
    """The Markdown report: machine, command, AUC per fold, times."""
    history = trained.history
    share = history.converted / len(history.leads)
    aucs = trained.fold_aucs
    verdict = (
        "met"
        if trained.auc_mean >= TARGET_AUC
        else f"missed by {TARGET_AUC - trained.auc_mean:.3f}"
    )
    command = shlex.join([machine.shown_python(), "-m", "bench.scoring", *argv])
    machine_facts = [
        (label, value) for label, value in machine.describe() if label != "Packages"
    ]
    lines = [
        "# Lead scoring benchmark",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- Command: `{command}`",
        f"- Code: {machine.code_version()}",
        *(f"- {label}: {value}" for label, value in machine_facts),
        f"- Packages: {machine.package_versions(PACKAGES)}",
        f"- Data: `{machine.shown_path(path)}`, {len(history.leads):,} labelled rows "
        f"({history.converted:,} converted, {share:.1%})"
        + (f", {history.skipped:,} rows skipped" if history.skipped else ""),
        f"- Label: `{LABEL}` (converted = `{history.positive}`)",
        f"- Left out (filled in after first contact, or ids): "
        f"{', '.join(f'`{name}`' for name in excluded)}",
        f"- Features ({len(history.features)}): "
        + ", ".join(f"`{f.name}` ({f.kind})" for f in history.features),
        "- Not used as features: "
        + (
            ", ".join(f"`{name}` ({why})" for name, why in history.ignored.items())
            or "none"
        ),
        f"- Model: logistic regression (C {REGULARISATION}) over one-hot "
        f"features: each category's values seen on {MIN_COUNT} or more "
        f"rows, `uncommon` and `missing`; each number in up to {BINS} "
        "quantile bins and `missing`; placeholders such as `Select` are missing. "
        "The same `train_model` as `orchestrator score train`.",
        f"- Cross-validation: {len(aucs)} stratified folds, shuffled with seed 0.",
        "",
        "## AUC",
        "",
        "| Fold | AUC |",
        "| ---: | ---: |",
        *(f"| {number} | {auc:.4f} |" for number, auc in enumerate(aucs, start=1)),
        f"| mean ± std | **{trained.auc_mean:.4f} ± {trained.auc_spread:.4f}** |",
        f"| lowest – highest | {min(aucs):.4f} – {max(aucs):.4f} |",
        "",
        f"Baseline (logistic regression on form and web fields): {BASELINE_AUC}. "
        f"Target: {TARGET_AUC:.2f} — {verdict}.",
        "",
        "## Time",
        "",
        "| Step | Time |",
        "| --- | ---: |",
        f"| training, whole command (read, cross-validate, fit, save) "
        f"| {train_seconds:.1f} s |",
        f"| of which cross-validation ({len(aucs)} fits) "
        f"| {trained.cv_seconds:.1f} s |",
        f"| of which the final fit on every row | {trained.fit_seconds:.2f} s |",
        f"| loading the saved model | {load_ms:.0f} ms |",
        *(
            f"| scoring one lead, {name} | {micros:.1f} µs |"
            for name, micros in timings
        ),
        "",
        f"Scoring times are the best of {TIMING_ROUNDS} passes over all "
        f"{len(history.leads):,} leads, one `Scorer.score` call each, with the "
        "rules of `config/scoring.yaml`.",
        "",
        "## Notes",
        "",
        *(f"- {note}" for note in DESIGN_NOTES),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    """Runs the benchmark, prints the report and writes it to `bench/results/`.

    Returns:
        0, also when the data set is absent (the run is skipped).
    """
    parser = argparse.ArgumentParser(
        prog="python -m bench.scoring",
        description="Cross-validated lead-scoring AUC on X Education's leads; "
        f"writes {RESULTS.relative_to(REPO_ROOT)}. Data from ORCH_BENCH_DATA "
        "(default ../shared/data beside the repository).",
    )
    parser.add_argument("--folds", type=int, default=5, choices=range(2, 21))
    args = parser.parse_args(argv)

    path = machine.data_dir() / DATASET
    if not path.is_file():
        reason = (
            f"data set `{machine.shown_path(path)}` not found; set ORCH_BENCH_DATA "
            "to the folder holding xeducation_leads/"
        )
        heading = machine.heading("Lead scoring benchmark", "bench.scoring", argv)
        machine.save(RESULTS, "\n".join([*heading, "", f"Skipped: {reason}."]) + "\n")
        headline.record(
            "scoring",
            argv,
            [headline.skipped(AUC_LABEL, reason, target=f"≥ {TARGET_AUC:.2f}")],
            report=RESULTS,
            data=machine.data_dir(),
        )
        return 0

    excluded = excluded_columns(path)
    with tempfile.TemporaryDirectory() as models:
        model_dir = Path(models)
        started = perf_counter()
        trained = train_model(
            path,
            label=LABEL,
            model_dir=model_dir,
            exclude=excluded,
            folds=args.folds,
            progress=_progress,
        )
        train_seconds = perf_counter() - started

        started = perf_counter()
        model = load_model(model_dir, trained.version)
        load_ms = (perf_counter() - started) * 1000

    config = load_config(CONFIG)
    leads = trained.history.leads
    scorers = [
        ("rules alone", Scorer(config.model_copy(update={"combine": "rules"}))),
        ("model alone", Scorer(config.model_copy(update={"combine": "model"}), model)),
        (f"{config.combine} (the default)", Scorer(config, model)),
    ]
    timings = [(name, time_per_lead(s.score, leads)) for name, s in scorers]

    text = report(argv, path, excluded, trained, train_seconds, load_ms, timings)
    print(text, end="")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text, encoding="utf-8")
    _progress(f"report written to {os.path.relpath(RESULTS)}")
    headline.record(
        "scoring",
        argv,
        [
            headline.measured(
                AUC_LABEL,
                "",
                trained.fold_aucs,
                target=f"≥ {TARGET_AUC:.2f}",
                met=statistics.median(trained.fold_aucs) >= TARGET_AUC,
                note=f"one cross-validation, a run per fold; mean "
                f"{trained.auc_mean:.3f}, baseline {BASELINE_AUC}",
            )
        ],
        report=RESULTS,
        data=machine.data_dir(),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

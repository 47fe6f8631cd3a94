"""The `orchestrator score` commands: training a lead-scoring model on your history."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from pydantic import ValidationError

from leads.scoring import TrainingError, train_model
from leads.settings import Settings

# Columns the sales team fills in after contact took the benchmark's real leads
# from 0.87 to 0.98: an AUC this high more often means a leak than a great model.
SUSPICIOUS_AUC = 0.97

score = typer.Typer(no_args_is_help=True)


# A callback keeps `score` a group even while it has one command, so the
# command is always `orchestrator score train`.
@score.callback()
def scoring() -> None:
    """Lead scoring: a model trained on your own converted and lost leads."""


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


@score.command()
def train(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV of past leads with their outcome, read like an import.",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ],
    label: Annotated[
        str,
        typer.Option(help="The outcome column: converted or not.", show_default=False),
    ],
    exclude: Annotated[
        list[str] | None,
        typer.Option(
            help=(
                "A column to leave out; repeat for more. Leave out every column "
                "the sales team fills in after first contact: it leaks the outcome."
            ),
        ),
    ] = None,
    positive: Annotated[
        str | None,
        typer.Option(
            help=(
                "The label value meaning converted. Default: 1, true, yes, won "
                "or converted, when the column holds such values."
            ),
        ),
    ] = None,
    folds: Annotated[
        int, typer.Option(min=2, max=20, help="Folds of cross-validation.")
    ] = 5,
) -> None:
    """Trains a model, prints its cross-validated AUC and saves a new version."""
    # Read fresh rather than cached, so ORCH_DATA_DIR set just before counts.
    try:
        model_dir = Settings().model_dir
    except ValidationError as exc:
        error = exc.errors()[0]
        name = "ORCH_" + "_".join(str(part) for part in error["loc"]).upper()
        _fail(f"{name}: {error['msg']}")
    try:
        trained = train_model(
            file,
            label=label,
            model_dir=model_dir,
            exclude=exclude or (),
            positive=positive,
            folds=folds,
            progress=typer.echo,
        )
    except TrainingError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"the model could not be saved: {exc}")
    low, high = min(trained.fold_aucs), max(trained.fold_aucs)
    typer.echo(
        f"AUC {trained.auc_mean:.3f} ± {trained.auc_spread:.3f} over {folds} folds "
        f"(lowest {low:.3f}, highest {high:.3f}); "
        f"{trained.cv_seconds + trained.fit_seconds:.1f} s"
    )
    typer.echo(f"saved model {trained.version} to {trained.path}")
    if trained.auc_mean > SUSPICIOUS_AUC:
        typer.echo(
            "note: an AUC this high often means a column recorded after the "
            "outcome is in the file; --exclude it if so"
        )

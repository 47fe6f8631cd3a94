"""Headline figures: each benchmark's few numbers as JSON, and the table made of them.

A benchmark calls `record` after writing its Markdown report, with the figures a
reader compares runs by (a median of several runs and its spread, the target and
whether it was met, a peer measured in the same run). `python -m bench report`
reads every `bench/results/<name>-headline.json` and writes the table into
`bench/results/README.md` and between the markers in the top-level README.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import statistics
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import machine

RESULTS = Path(__file__).parent / "results"
README = machine.REPO_ROOT / "README.md"
# Raised when the JSON's shape changes; older files then show as not run.
FORMAT = 1
BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"
VERDICTS = ("met", "missed", "no target", "skipped")


class MarkersMissing(ValueError):
    """The README lacks the begin and end markers the table goes between."""


@dataclass(frozen=True)
class Peer:
    """Another project measured in the same run on the same machine."""

    name: str
    value: float

    def ratio(self, ours: float) -> float | None:
        """Ours divided by the peer's, or None where the peer's is zero."""
        return ours / self.value if self.value else None


@dataclass(frozen=True)
class Figure:
    """One headline number: every run's value, the target, and the verdict.

    `value` is the median of `runs`; a skipped figure has no runs and says why in
    `reason`. `note` qualifies a measured figure (how the runs differ, what the
    number leaves out).
    """

    label: str
    unit: str
    runs: tuple[float, ...] = ()
    target: str | None = None
    verdict: str = "no target"
    reason: str | None = None
    note: str | None = None
    peers: tuple[Peer, ...] = ()

    @property
    def value(self) -> float | None:
        return statistics.median(self.runs) if self.runs else None

    def as_json(self) -> dict[str, Any]:
        """The figure as `record` writes it."""
        value = self.value
        return {
            "label": self.label,
            "value": value,
            "unit": self.unit,
            "runs": list(self.runs),
            "count": len(self.runs),
            "min": min(self.runs) if self.runs else None,
            "max": max(self.runs) if self.runs else None,
            "target": self.target,
            "verdict": self.verdict,
            "reason": self.reason,
            "note": self.note,
            "peers": [
                {
                    "name": peer.name,
                    "value": peer.value,
                    "ratio": None if value is None else peer.ratio(value),
                }
                for peer in self.peers
            ],
        }


def measured(
    label: str,
    unit: str,
    runs: Iterable[float],
    *,
    target: str | None = None,
    met: bool | None = None,
    note: str | None = None,
    peers: Sequence[Peer] = (),
) -> Figure:
    """A figure measured in one or more runs.

    Args:
        label: what was measured, as the table's row says it.
        unit: the value's unit (`rows/s`, `ms`, `MB`).
        runs: each run's value, in the order they ran.
        target: the target as text (`≥ 10,000 rows/s`); None where none is set.
        met: whether the median meets the target; required with a target.
        note: what a reader should know to read the number.
        peers: the same figure for other projects, measured in the same run.

    Raises:
        ValueError: no runs, or a target without `met`.
    """
    values = tuple(float(value) for value in runs)
    if not values:
        raise ValueError(f"{label!r}: no runs; use `skipped` for a figure not measured")
    if target is not None and met is None:
        raise ValueError(f"{label!r}: a target needs `met`, True or False")
    verdict = "no target" if target is None else ("met" if met else "missed")
    return Figure(label, unit, values, target, verdict, None, note, tuple(peers))


def skipped(
    label: str, reason: str, *, unit: str = "", target: str | None = None
) -> Figure:
    """A figure this run did not measure, and why (a missing data set, an option)."""
    return Figure(label, unit, (), target, "skipped", reason)


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def record(
    name: str,
    argv: Sequence[str],
    figures: Sequence[Figure],
    *,
    report: Path,
    data: Path | None = None,
    smoke: bool = False,
    results: Path = RESULTS,
) -> Path:
    """Writes `<results>/<name>-headline.json` for the report just written.

    Call it after the Markdown report is written: the JSON keeps the report's
    digest, so a later run that rewrites the report without recording headlines
    leaves this file marked stale.

    Args:
        name: the benchmark's name in `bench.__main__.BENCHMARKS`.
        argv: the arguments it was given, for the command shown.
        figures: its headline figures, in the order the table shows them.
        report: its Markdown report.
        data: the data folder it read, if it read one.
        smoke: a smoke run (`--quick`): its figures show as not run.
        results: where to write (the tests' temporary folder).

    Returns:
        The path written.
    """
    document = {
        "format": FORMAT,
        "benchmark": name,
        "command": shlex.join([machine.shown_python(), "-m", f"bench.{name}", *argv]),
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "code": machine.code_version(),
        "machine": f"{machine.cpu_model()}, {machine.cpu_counts()}, "
        f"{machine.total_memory()}",
        "machine_details": [list(fact) for fact in machine.describe()],
        "load_average": machine.load_average(),
        "data": None if data is None else machine.shown_path(data),
        "report": machine.shown_path(report),
        "report_sha256": _digest(report),
        "smoke": smoke,
        "figures": [figure.as_json() for figure in figures],
    }
    path = results / f"{name}-headline.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return path


# The report: every benchmark's headlines as one table -------------------------------


@dataclass
class Entry:
    """One benchmark's headline file as read, or why it counts as not run."""

    name: str
    document: dict[str, Any] | None = None
    not_run: str | None = None
    figures: list[dict[str, Any]] = field(default_factory=list)


def read(name: str, results: Path = RESULTS) -> Entry:
    """The benchmark's headlines, or an entry saying why there are none to show."""
    path = results / f"{name}-headline.json"
    report = results / f"{name}-latest.md"
    if not path.is_file():
        last = f"; its last report: `{machine.shown_path(report)}`"
        return Entry(
            name, not_run="no headline file" + (last if report.is_file() else "")
        )
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return Entry(name, not_run=f"`{path.name}` unreadable ({exc})")
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        found = document.get("format") if isinstance(document, dict) else None
        return Entry(name, not_run=f"`{path.name}` is format {found}, not {FORMAT}")
    if document.get("smoke"):
        return Entry(
            name, document, f"its last run was a smoke run (`{document['command']}`)"
        )
    recorded = document.get("report_sha256")
    if recorded is not None and _digest(results / Path(document["report"]).name) != (
        recorded
    ):
        return Entry(
            name,
            document,
            f"stale: `{Path(document['report']).name}` was rewritten after "
            f"`{path.name}` (a later run recorded no headlines)",
        )
    return Entry(name, document, figures=list(document.get("figures", [])))


def number(value: float) -> str:
    """A value with the digits its size needs: 12,345 · 12.3 · 1.23 · 0.0123 · 0."""
    size = abs(value)
    if value == int(value) and size < 1e15:
        return f"{int(value):,}"
    if size >= 100:
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1 or size == 0:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _spread(figure: dict[str, Any]) -> str:
    if not figure.get("count"):
        return "–"
    if figure["count"] == 1:
        return "one run"
    return f"{number(figure['min'])} – {number(figure['max'])}"


def _verdict(figure: dict[str, Any]) -> str:
    verdict = figure["verdict"]
    if verdict == "missed":
        return "**missed**"
    if verdict == "skipped":
        return f"skipped: {figure.get('reason') or 'no reason given'}"
    return verdict


def _peers(figure: dict[str, Any]) -> str:
    shown = []
    for peer in figure.get("peers", []):
        ratio = peer.get("ratio")
        times = "" if ratio is None else f": ours ×{number(ratio)}"
        shown.append(f"{peer['name']} {number(peer['value'])}{times}")
    return "; ".join(shown) or "–"


def _value(figure: dict[str, Any]) -> str:
    if figure.get("value") is None:
        return "not measured"
    unit = figure["unit"]
    shown = number(figure["value"]) + (unit if unit == "×" else f" {unit}".rstrip())
    return f"{shown} ({figure['note']})" if figure.get("note") else shown


def table(entries: Sequence[Entry]) -> list[str]:
    """One row per figure; a benchmark without headlines is one `not run` row."""
    lines = [
        "| Benchmark | Figure | Target | Median | Spread (min – max) | Runs "
        "| Verdict | Peers, same run |",
        "| --- | --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for entry in entries:
        if entry.not_run is not None:
            lines.append(
                f"| `{entry.name}` | not run: {entry.not_run} | – | – | – | – | – | – |"
            )
            continue
        for figure in entry.figures:
            lines.append(
                f"| `{entry.name}` | {figure['label']} | {figure.get('target') or '–'} "
                f"| {_value(figure)} | {_spread(figure)} | {figure.get('count', 0)} "
                f"| {_verdict(figure)} | {_peers(figure)} |"
            )
    return lines


def _wrapped(lines: Iterable[str]) -> list[str]:
    """Prose and bullets wrapped at 88 columns, as the README's own text is."""
    wrapped = []
    for line in lines:
        indent = "  " if line.startswith("- ") else ""
        wrapped += textwrap.wrap(
            line,
            88,
            subsequent_indent=indent,
            break_long_words=False,
            break_on_hyphens=False,
        ) or [""]
    return wrapped


def provenance(entries: Sequence[Entry]) -> list[str]:
    """Where each benchmark's figures came from: command, date, code, machine, data."""
    lines = []
    for entry in entries:
        document = entry.document
        if document is None or entry.not_run is not None:
            continue
        data = f"; data `{document['data']}`" if document.get("data") else ""
        lines.append(
            f"- `{entry.name}`: `{document['command']}`, {document['date']}, "
            f"code {document['code']}; {document['machine']}; load average at the "
            f"end {document['load_average']}{data}; report `{document['report']}`"
        )
    return lines


def section(entries: Sequence[Entry]) -> list[str]:
    """The block the top-level README shows between its markers."""
    return [
        *_wrapped(
            [
                "Written by `python -m bench report` (run at the end of `make "
                "bench`) from `bench/results/*-headline.json`; "
                "`bench/results/README.md` has each run's values."
            ]
        ),
        "",
        *table(entries),
        "",
        "Each benchmark's figures came from this command and machine:",
        "",
        *_wrapped(provenance(entries) or ["- none yet: no benchmark has recorded any"]),
    ]


def _runs(entries: Sequence[Entry]) -> list[str]:
    lines = []
    for entry in entries:
        for figure in entry.figures:
            if figure.get("count", 0) > 1:
                values = ", ".join(number(value) for value in figure["runs"])
                lines.append(
                    f"- `{entry.name}`, {figure['label']}: {values} {figure['unit']}"
                )
    return lines


def results_page(entries: Sequence[Entry]) -> str:
    """`bench/results/README.md`: the table, each run's values, the machines."""
    machines = [
        f"- `{entry.name}`: "
        + "; ".join(
            f"{label} {value}" for label, value in entry.document["machine_details"]
        )
        for entry in entries
        if entry.document is not None and entry.not_run is None
    ]
    lines = [
        "# Benchmark results",
        "",
        *_wrapped(
            [
                "Written by `python -m bench report` from the `*-headline.json` "
                "files here, each recorded by its benchmark beside its "
                "`*-latest.md` report. A median is of the runs counted; the spread "
                "is their lowest and highest. A benchmark whose headlines are "
                "missing, stale or from a smoke run shows as not run."
            ]
        ),
        "",
        *table(entries),
        "",
        "## Where the figures came from",
        "",
        *_wrapped(provenance(entries) or ["- none yet"]),
        "",
        "## Each run's values",
        "",
        *_wrapped(_runs(entries) or ["- no figure has more than one run"]),
        "",
        "## Machines",
        "",
        *_wrapped(machines or ["- none yet"]),
    ]
    return "\n".join(lines) + "\n"


def between_markers(text: str, block: Sequence[str]) -> str:
    """`text` with what lies between the begin and end markers replaced by `block`.

    Raises:
        MarkersMissing: either marker is absent, or they are out of order.
    """
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < 0 or end < start:
        raise MarkersMissing(
            f"expected the lines {BEGIN} and {END}, in that order, around the "
            "benchmark table; add them where the table belongs"
        )
    inner = "\n".join(["", *block, ""])
    return text[: start + len(BEGIN)] + inner + "\n" + text[end:]


def write(
    names: Sequence[str], results: Path = RESULTS, readme: Path = README
) -> list[Entry]:
    """Writes `results/README.md` and the table between `readme`'s markers.

    Raises:
        MarkersMissing: `readme` lacks the markers; nothing is written then.
    """
    entries = [read(name, results) for name in names]
    rewritten = between_markers(readme.read_text(encoding="utf-8"), section(entries))
    (results / "README.md").write_text(results_page(entries), encoding="utf-8")
    readme.write_text(rewritten, encoding="utf-8")
    return entries

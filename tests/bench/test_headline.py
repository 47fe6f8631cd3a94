"""Headline figures as JSON, and the table `python -m bench report` makes of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import headline
from bench.__main__ import BENCHMARKS, report
from bench.headline import BEGIN, END, MarkersMissing, Peer

README = f"""# Project

Intro.

## Measured

Text before the table stays.

{BEGIN}
| old | hand-written | table |
{END}

Text after the table stays.
"""


def _report(folder: Path, name: str, text: str = "# Report\n") -> Path:
    path = folder / f"{name}-latest.md"
    path.write_text(text, encoding="utf-8")
    return path


def _results(folder: Path) -> Path:
    results = folder / "results"
    results.mkdir()
    _recorded(results)
    return results


def _recorded(folder: Path, name: str = "imports", **options) -> dict:
    figures = options.pop(
        "figures",
        [
            headline.measured(
                "CSV import, 10,000 rows",
                "rows/s",
                [220.0, 240.0, 230.0],
                target="≥ 10,000 rows/s",
                met=False,
            )
        ],
    )
    report = _report(folder, name)
    path = headline.record(
        name, ["--runs", "3"], figures, report=report, results=folder, **options
    )
    return json.loads(path.read_text(encoding="utf-8"))


class TestMeasured:
    def test_value_is_the_median_of_the_runs(self):
        figure = headline.measured("f", "ms", [3.0, 1.0, 2.0])

        assert figure.value == 2.0
        assert figure.verdict == "no target"

    def test_verdict_follows_met(self):
        met = headline.measured("f", "ms", [1.0], target="≤ 5 ms", met=True)
        missed = headline.measured("f", "ms", [9.0], target="≤ 5 ms", met=False)

        assert (met.verdict, missed.verdict) == ("met", "missed")

    def test_refuses_a_figure_without_runs(self):
        with pytest.raises(ValueError, match="skipped"):
            headline.measured("f", "ms", [])

    def test_refuses_a_target_without_a_verdict(self):
        with pytest.raises(ValueError, match="met"):
            headline.measured("f", "ms", [1.0], target="≤ 5 ms")

    def test_peer_ratio_is_ours_over_theirs(self):
        figure = headline.measured("f", "leads/s", [300.0], peers=[Peer("n8n", 200.0)])

        assert figure.as_json()["peers"] == [
            {"name": "n8n", "value": 200.0, "ratio": 1.5}
        ]


class TestRecord:
    def test_writes_every_run_with_its_spread_and_count(self, tmp_path):
        document = _recorded(tmp_path)
        (figure,) = document["figures"]

        assert (tmp_path / "imports-headline.json").is_file()
        assert figure["value"] == 230.0
        assert figure["runs"] == [220.0, 240.0, 230.0]
        assert (figure["count"], figure["min"], figure["max"]) == (3, 220.0, 240.0)
        assert (figure["target"], figure["verdict"]) == ("≥ 10,000 rows/s", "missed")

    def test_names_the_command_machine_commit_and_data(self, tmp_path):
        document = _recorded(tmp_path, data=tmp_path / "data")

        assert document["command"].endswith("-m bench.imports --runs 3")
        assert "logical CPU" in document["machine"]
        assert document["code"]
        assert document["data"].endswith("data")
        assert document["report"].endswith("imports-latest.md")

    def test_a_skipped_figure_keeps_its_reason_and_no_value(self, tmp_path):
        figures = [headline.skipped("AUC", "data set absent", target="≥ 0.90")]

        (figure,) = _recorded(tmp_path, figures=figures)["figures"]

        assert (figure["value"], figure["count"]) == (None, 0)
        assert (figure["verdict"], figure["reason"]) == ("skipped", "data set absent")


class TestRead:
    def test_a_missing_file_is_not_run_and_points_at_the_last_report(self, tmp_path):
        _report(tmp_path, "scoring")

        entry = headline.read("scoring", tmp_path)

        assert entry.not_run.startswith("no headline file")
        assert "scoring-latest.md" in entry.not_run

    def test_a_smoke_run_is_not_run(self, tmp_path):
        _recorded(tmp_path, smoke=True)

        assert "smoke run" in headline.read("imports", tmp_path).not_run

    def test_a_report_rewritten_after_the_headlines_makes_them_stale(self, tmp_path):
        _recorded(tmp_path)
        _report(tmp_path, "imports", "# A later run that recorded no headlines\n")

        assert headline.read("imports", tmp_path).not_run.startswith("stale")

    def test_another_format_is_not_run(self, tmp_path):
        (tmp_path / "imports-headline.json").write_text('{"format": 0}')

        assert "format 0" in headline.read("imports", tmp_path).not_run

    def test_a_fresh_file_shows_its_figures(self, tmp_path):
        _recorded(tmp_path)

        entry = headline.read("imports", tmp_path)

        assert entry.not_run is None
        assert [figure["label"] for figure in entry.figures] == [
            "CSV import, 10,000 rows"
        ]


class TestTable:
    def test_shows_median_spread_runs_and_a_missed_target(self, tmp_path):
        _recorded(tmp_path)

        (row,) = headline.table([headline.read("imports", tmp_path)])[2:]

        assert row == (
            "| `imports` | CSV import, 10,000 rows | ≥ 10,000 rows/s | 230 rows/s "
            "| 220 – 240 | 3 | **missed** | – |"
        )

    def test_one_run_says_so_instead_of_a_spread(self, tmp_path):
        figures = [headline.measured("Peak RSS", "MB", [312.4])]
        _recorded(tmp_path, figures=figures)

        (row,) = headline.table([headline.read("imports", tmp_path)])[2:]

        assert "| 312 MB | one run | 1 |" in row

    def test_a_skipped_figure_gives_its_reason(self, tmp_path):
        figures = [headline.skipped("1M rows", "would take 70 min", unit="rows/s")]
        _recorded(tmp_path, figures=figures)

        (row,) = headline.table([headline.read("imports", tmp_path)])[2:]

        assert "not measured" in row
        assert "skipped: would take 70 min" in row

    def test_a_peer_shows_its_value_and_our_ratio(self, tmp_path):
        figures = [headline.measured("F1", "", [0.9], peers=[Peer("splink", 0.75)])]
        _recorded(tmp_path, figures=figures)

        (row,) = headline.table([headline.read("imports", tmp_path)])[2:]

        assert "splink 0.75: ours ×1.20" in row

    def test_a_ratio_far_below_one_keeps_its_significant_digits(self, tmp_path):
        figures = [
            headline.measured("One lead", "ms", [0.05], peers=[Peer("splink", 80.0)])
        ]
        _recorded(tmp_path, figures=figures)

        (row,) = headline.table([headline.read("imports", tmp_path)])[2:]

        assert "splink 80: ours ×0.000625" in row

    def test_a_benchmark_without_headlines_is_one_not_run_row(self, tmp_path):
        (row,) = headline.table([headline.read("matching", tmp_path)])[2:]

        assert row.startswith("| `matching` | not run: no headline file")


class TestNumber:
    @pytest.mark.parametrize(
        ("value", "shown"),
        [
            (12345.6, "12,346"),
            (12.34, "12.3"),
            (1.234, "1.23"),
            (0.0201, "0.0201"),
            (0.0, "0"),
        ],
    )
    def test_shows_as_many_digits_as_the_size_needs(self, value, shown):
        assert headline.number(value) == shown


class TestWrite:
    def test_replaces_only_what_lies_between_the_markers(self, tmp_path):
        results = _results(tmp_path)
        readme = tmp_path / "README.md"
        readme.write_text(README, encoding="utf-8")

        headline.write(["imports", "matching"], results, readme)
        text = readme.read_text(encoding="utf-8")

        before, _, rest = text.partition(BEGIN)
        inside, _, after = rest.partition(END)
        assert before == README.partition(BEGIN)[0]
        assert after == README.partition(END)[2]
        assert "hand-written" not in inside
        assert "| `imports` | CSV import, 10,000 rows |" in inside
        assert "| `matching` | not run: no headline file" in inside
        assert "-m bench.imports --runs 3" in " ".join(inside.split())

    def test_writing_twice_gives_the_same_readme(self, tmp_path):
        results = _results(tmp_path)
        readme = tmp_path / "README.md"
        readme.write_text(README, encoding="utf-8")

        headline.write(["imports"], results, readme)
        once = readme.read_text(encoding="utf-8")
        headline.write(["imports"], results, readme)

        assert readme.read_text(encoding="utf-8") == once

    def test_writes_the_results_page_with_each_runs_values(self, tmp_path):
        results = _results(tmp_path)
        readme = tmp_path / "README.md"
        readme.write_text(README, encoding="utf-8")

        headline.write(["imports"], results, readme)
        page = (results / "README.md").read_text(encoding="utf-8")

        assert page.startswith("# Benchmark results")
        assert "| `imports` | CSV import, 10,000 rows |" in page
        assert "- `imports`, CSV import, 10,000 rows: 220, 240, 230 rows/s" in page

    def test_fails_clearly_and_writes_nothing_without_markers(self, tmp_path):
        results = _results(tmp_path)
        readme = tmp_path / "README.md"
        readme.write_text("# Project\n\nNo markers here.\n", encoding="utf-8")

        with pytest.raises(MarkersMissing, match="bench:begin"):
            headline.write(["imports"], results, readme)

        assert readme.read_text(encoding="utf-8") == "# Project\n\nNo markers here.\n"
        assert not (results / "README.md").exists()

    def test_fails_when_the_markers_are_out_of_order(self):
        with pytest.raises(MarkersMissing):
            headline.between_markers(f"{END}\n{BEGIN}\n", ["x"])


class TestReportCommand:
    def test_lists_every_benchmark_not_yet_run(self, tmp_path):
        results = tmp_path / "results"
        results.mkdir()
        readme = tmp_path / "README.md"
        readme.write_text(README, encoding="utf-8")

        assert report(results, readme) == 0

        text = readme.read_text(encoding="utf-8")
        for name in BENCHMARKS:
            assert f"| `{name}` | not run: no headline file" in text

    def test_fails_with_the_reason_when_the_readme_has_no_markers(
        self, tmp_path, capsys
    ):
        readme = tmp_path / "README.md"
        readme.write_text("# Project\n", encoding="utf-8")

        assert report(tmp_path, readme) == 1
        assert "README.md not updated: expected the lines" in capsys.readouterr().err

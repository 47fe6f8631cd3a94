"""The orchestration benchmark's own logic: summaries, ratios, CPU roles, the plan."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import pytest

from bench.cpu_time import Process
from bench.orchestration import (
    BENCH,
    DATABASE,
    FULL,
    MOST,
    QUICK,
    RUNNER,
    RUNS,
    SANDBOX,
    SERVER,
    Measured,
    Results,
    Roles,
    RunTimes,
    Spread,
    conclusions,
    cpu_cells,
    headlines,
    lifetime_cpu_s,
    parse_plan,
    per_lead_comparison,
    ratio,
)


class TestSpread:
    def test_takes_the_middle_value_and_the_extremes(self):
        spread = Spread.of([3.0, 1.0, 2.0])

        assert (spread.median, spread.low, spread.high, spread.count) == (
            2.0,
            1.0,
            3.0,
            3,
        )

    def test_takes_the_mean_of_the_two_middle_values_of_an_even_count(self):
        assert Spread.of([1.0, 2.0, 4.0, 10.0]).median == 3.0

    def test_shows_the_median_then_the_range(self):
        assert Spread.of([1.0, 1.5, 2.25]).shown() == "1.50 (1.00 – 2.25)"

    def test_shows_one_value_when_all_round_alike(self):
        assert Spread.of([1.001, 1.002]).shown() == "1.00"

    def test_refuses_no_values(self):
        with pytest.raises(ValueError, match="at least one"):
            Spread.of([])


class TestRunTimes:
    def test_counts_from_creation_to_the_end_and_the_time_running(self):
        run = RunTimes("COMPLETED", created=100.0, started=101.5, ended=102.0)

        assert run.to_done == 2.0
        assert run.running == 0.5

    def test_a_run_that_never_started_has_no_running_time(self):
        run = RunTimes("CANCELLED", created=100.0, started=None, ended=100.2)

        assert run.running is None
        assert run.to_done == pytest.approx(0.2)

    def test_a_run_not_ended_has_neither(self):
        run = RunTimes("RUNNING", created=100.0, started=101.0, ended=None)

        assert (run.to_done, run.running) == (None, None)


def measured(how: str, runs: int, leads: int, cpu: dict[str, float]) -> Measured:
    return Measured(
        "PostgreSQL",
        how,
        runs,
        leads,
        wall_s=float(runs),
        cpu=cpu,
        states=Counter({"COMPLETED": runs}),
    )


class TestCpuPerUnit:
    def test_prefect_side_leaves_out_the_sandbox_and_the_benchmark(self):
        m = measured(
            "drain",
            1,
            100,
            {SERVER: 1.0, DATABASE: 0.5, RUNNER: 0.5, RUNS: 2.0, SANDBOX: 9, BENCH: 9},
        )

        assert m.cpu_per(100) == pytest.approx(0.04)

    def test_a_ratio_over_nothing_is_none(self):
        assert ratio(1.0, 0.0) is None
        assert ratio(3.0, 2.0) == 1.5

    def test_cells_show_no_postgresql_share_on_sqlite(self):
        m = measured("deployment", 2, 0, {SERVER: 1.0, RUNS: 3.0})
        m.database = "SQLite"

        assert cpu_cells(m, 2, 1, 1) == "0.5 | – | 0.0 | 1.5 | 0.0 | 2.0"

    def test_all_runs_completed_only_when_every_one_did(self):
        m = measured("per-lead", 3, 3, {})
        assert m.all_completed

        m.states = Counter({"COMPLETED": 2, "CRASHED": 1})
        assert not m.all_completed


class TestPerLeadComparison:
    def test_gives_both_ratios_and_what_the_cores_allow(self):
        drain = measured("drain", 2, 1000, {RUNS: 10.0})
        # 10 leads in 10 s of wall, 40 CPU-s: 4 CPU-s a lead against 0.01.
        alone = measured("per-lead", 10, 10, {RUNS: 30.0, SERVER: 10.0})

        text = per_lead_comparison(drain, alone, cores=2)

        assert text is not None
        assert "500× the seconds" in text
        assert "400× the Prefect-side CPU" in text
        assert "a drain of 500" in text
        assert "at 0.50 leads/s, and drains at 200" in text

    def test_says_nothing_without_leads(self):
        drain = measured("drain", 1, 0, {RUNS: 1.0})
        alone = measured("per-lead", 1, 1, {RUNS: 1.0})

        assert per_lead_comparison(drain, alone, cores=2) is None


class TestConclusions:
    def test_compare_one_run_per_lead_with_a_drain_per_database(self):
        drain = measured("drain", 1, 1000, {RUNS: 5.0})
        alone = measured("per-lead", 5, 5, {RUNS: 25.0})

        [line] = conclusions([drain, alone], cores=2)

        assert line.startswith("- PostgreSQL: a lead synced in a run of its own")
        assert "1,000× the Prefect-side CPU" in line

    def test_warn_when_other_work_loaded_the_cores(self):
        drain = measured("drain", 1, 1000, {RUNS: 5.0})
        drain.load = "3.50, 2.00, 1.00"

        lines = conclusions([drain], cores=2)

        assert lines == [
            "- Other work shared the 2 cores: the 1-minute load average reached "
            "3.5 as measurements began. Wall-clock figures are therefore upper "
            "bounds; CPU seconds are what each process used, whatever the "
            "contention, and are the firmer figures."
        ]


class TestRoles:
    def table(self, *processes: Process) -> dict[int, Process]:
        return {p.pid: p for p in processes}

    def test_names_the_server_tree_the_database_and_the_sandbox(self):
        server = Process(10, 1, "prefect server start --port 5000", 1.0)
        worker = Process(11, 10, "python -m uvicorn", 1.0)
        ours = Process(20, 2, "postgres: postgres orch_bench_ab 127.0.0.1(1) idle", 1)
        other = Process(21, 2, "postgres: postgres somebody_else 127.0.0.1(2) idle", 1)
        sandbox = Process(30, 1, "orchestrator sandbox --port 8123", 1.0)
        stranger = Process(40, 1, "python elsewhere.py", 1.0)
        table = self.table(server, worker, ours, other, sandbox, stranger)
        roles = Roles(server=10, sandbox_port=8123, database="orch_bench_ab")

        named = {p.pid: roles(p, table) for p in table.values()}

        assert named == {
            10: SERVER,
            11: SERVER,
            20: DATABASE,
            21: None,
            30: SANDBOX,
            40: None,
        }

    def test_counts_this_process_as_the_benchmark(self):
        me = Process(os.getpid(), 1, "python -m bench.orchestration", 1.0)

        assert Roles(1, 1, None)(me, {me.pid: me}) == BENCH


def test_a_waited_for_child_adds_its_cpu_to_the_parents_children_seconds():
    before = lifetime_cpu_s(os.getpid())

    subprocess.run(
        [sys.executable, "-c", "sum(i * i for i in range(3_000_000))"], check=True
    )

    after = lifetime_cpu_s(os.getpid())
    assert after[1] > before[1]
    assert after[0] >= before[0]


class TestPlan:
    def test_defaults_to_both_databases_and_the_full_sizes(self):
        plan = parse_plan([])

        assert plan.databases == ("sqlite", "postgresql")
        assert (plan.calls, plan.lead_runs) == (FULL["calls"], FULL["lead_runs"])

    def test_quick_lowers_every_size_but_a_size_given_wins(self):
        plan = parse_plan(["--quick", "--lead-runs", "9"])

        assert plan.runs == QUICK["runs"]
        assert plan.lead_runs == 9

    def test_refuses_a_size_over_its_bound(self, capsys):
        with pytest.raises(SystemExit):
            parse_plan(["--lead-runs", str(MOST["lead_runs"] + 1)])

    def test_refuses_an_unknown_database(self, capsys):
        with pytest.raises(SystemExit):
            parse_plan(["--databases", "sqlite,mysql"])

    def test_keeps_the_databases_in_the_order_given(self):
        assert parse_plan(["--databases", "postgresql,sqlite"]).databases == (
            "postgresql",
            "sqlite",
        )


class TestHeadlines:
    def results(self) -> Results:
        served = measured("deployment", 3, 0, {SERVER: 3.0, RUNS: 6.0})
        served.durations = [4.0, 3.0, 5.0]
        served.running = [1.0, 1.2, 1.1]
        drain = measured("drain", 2, 400, {RUNS: 4.0})
        alone = measured("per-lead", 10, 10, {RUNS: 20.0, SERVER: 10.0})
        return Results(measured=[served, drain, alone])

    def figures(self, results: Results, *databases: str) -> dict[str, dict]:
        plan = parse_plan(["--databases", ",".join(databases or ("postgresql",))])
        return {f.label: f.as_json() for f in headlines(plan, results)}

    def test_a_served_runs_seconds_are_each_runs_and_its_cpu_the_windows_share(self):
        figures = self.figures(self.results())

        seconds = figures["PostgreSQL: a served `noop` flow run, creation to end"]
        assert (seconds["value"], seconds["runs"]) == (4.0, [4.0, 3.0, 5.0])
        assert seconds["note"].startswith("RUNNING 1.10 s of it (median); 3 runs")
        cpu = figures["PostgreSQL: Prefect CPU per served `noop` flow run"]
        assert (cpu["value"], cpu["unit"], cpu["count"]) == (3.0, "CPU-s", 1)
        assert "2.00 of it the run's process" in cpu["note"]

    def test_cpu_per_synced_lead_in_a_drain_against_a_run_per_lead(self):
        figures = self.figures(self.results())

        label = "PostgreSQL: Prefect CPU per synced lead, one `crm_sync` run per "
        drain = figures[label + "drain of 200"]
        alone = figures[label + "lead"]
        times = figures[
            "PostgreSQL: Prefect CPU per synced lead, one run per lead ÷ one drain"
        ]
        assert drain["value"] == pytest.approx(10.0)
        assert alone["value"] == pytest.approx(3_000.0)
        assert (times["value"], times["unit"]) == (pytest.approx(300.0), "×")

    def test_runs_that_did_not_complete_are_named(self):
        results = self.results()
        results.measured[2].states = Counter({"COMPLETED": 9, "CRASHED": 1})

        figures = self.figures(results)

        alone = figures[
            "PostgreSQL: Prefect CPU per synced lead, one `crm_sync` run per lead"
        ]
        assert alone["note"].endswith("runs ended {'COMPLETED': 9, 'CRASHED': 1}")

    def test_a_database_not_measured_is_skipped_with_its_problem(self):
        results = self.results()
        results.problems = ["sqlite: PostgreSQL only, this time"]

        figures = self.figures(results, "sqlite", "postgresql")

        skipped = [f for f in figures.values() if f["verdict"] == "skipped"]
        assert len(skipped) == 5
        assert {f["reason"] for f in skipped} == {"sqlite: PostgreSQL only, this time"}
        assert all(f["label"].startswith("sqlite: ") for f in skipped)

"""The ingest benchmark's own logic: wrk's result line, the rate ladder, the stages."""

from __future__ import annotations

import math
from collections import Counter

import pytest

import leads.intake
from bench.ingest import (
    API_ROLE,
    FULL,
    P99_TARGET,
    QUICK,
    TIMED,
    WRK_MISSING,
    BackendResults,
    Stages,
    WrkFailed,
    WrkResult,
    WrkRun,
    _stopwatch,
    _timing,
    headlines,
    parse_plan,
    parse_wrk,
    rate_reference,
    saturated,
    stages_table,
    wrk_reference,
)
from bench.mixed_load import Shot, Window

WRK_OUTPUT = """\
Running 10s test @ http://127.0.0.1:40000
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    32.12ms   47.15ms 264.97ms   91.97%
  780 requests in 2.02s, 0.90MB read
Requests/sec:    386.99
ingest-result requests=780 duration_us=2000000 accepted=770 refused=10 connect=0 \
read=1 write=0 status=10 timeout=2 p50_us=16169 p90_us=54225 p95_us=159456 \
p99_us=244183 max_us=264969
"""


class TestParsingWrk:
    def test_reads_counts_errors_and_latencies_from_the_result_line(self):
        result = parse_wrk(WRK_OUTPUT)

        assert result.requests == 780
        assert result.seconds == 2.0
        assert (result.accepted, result.refused) == (770, 10)
        assert result.socket_errors == {
            "connect": 0,
            "read": 1,
            "write": 0,
            "timeout": 2,
        }
        assert result.latency_ms["p50"] == pytest.approx(16.169)
        assert result.latency_ms["p99"] == pytest.approx(244.183)
        assert result.latency_ms["max"] == pytest.approx(264.969)

    def test_rate_counts_only_answers_201_and_errors_count_the_rest(self):
        result = parse_wrk(WRK_OUTPUT)

        assert result.rate == 385.0
        # wrk's `status` errors are the refused answers, counted once.
        assert result.errors == 10 + 1 + 2

    def test_output_without_the_result_line_is_a_failure(self):
        with pytest.raises(WrkFailed, match="no `ingest-result` line"):
            parse_wrk("Running 10s test @ http://127.0.0.1:40000\n")

    def test_a_result_line_missing_a_field_is_a_failure(self):
        with pytest.raises(WrkFailed, match="unreadable"):
            parse_wrk("ingest-result requests=5 duration_us=100\n")

    def test_a_run_without_time_has_no_rate(self):
        result = WrkResult(0, 0.0, 0, 0, {}, {})

        assert math.isnan(result.rate)


def window(rate: float, answered: int, statuses: int = 201) -> Window:
    """`answered` requests sent `1/rate` s apart, each answered in 5 ms."""
    shots = [Shot(i / rate, 0.1, 5.0, statuses, "") for i in range(answered)]
    return Window(f"rate{rate:.0f}", rate, answered / rate, "p", shots=shots)


def half_answered(paced: Window) -> Window:
    """The same requests answered over twice the time: half the rate."""
    return Window(
        paced.name,
        paced.rate,
        paced.seconds,
        "p",
        shots=[shot._replace(due_s=shot.due_s * 2) for shot in paced.shots],
    )


class TestTheRateLadder:
    def test_a_rate_answered_in_full_is_not_saturated(self):
        assert not saturated(window(100, 100))

    def test_a_rate_answered_below_nine_tenths_is_saturated(self):
        slow = half_answered(window(100, 100))

        assert saturated(slow)

    def test_a_rate_answered_only_with_errors_is_saturated(self):
        assert saturated(window(100, 100, statuses=503))


class TestThePlan:
    def test_defaults_are_the_full_run(self):
        assert parse_plan([]) == FULL

    def test_quick_is_a_smaller_run_of_every_part(self):
        plan = parse_plan(["--quick"])

        assert plan == QUICK
        assert plan.drains and plan.rates and plan.connections

    def test_options_override_the_defaults(self):
        plan = parse_plan(
            ["--backends", "postgresql", "--rates", "100,500", "--no-drains"]
        )

        assert plan.backends == ("postgresql",)
        assert plan.rates == (100, 500)
        assert not plan.drains
        assert plan.connections == FULL.connections

    @pytest.mark.parametrize(
        "argv",
        [
            ["--rates", "0"],
            ["--rates", "ten"],
            ["--seconds", "5,6"],
            ["--backends", "mysql"],
        ],
    )
    def test_refuses_values_out_of_bounds(self, argv):
        with pytest.raises(SystemExit):
            parse_plan(argv)


def stages(api_us: float | None) -> Stages:
    found = Stages("a run", 8, 100, 50_000, api_us=api_us)
    found.cpu_us = {
        "parse": 5,
        "validate": 40,
        "clean": 60,
        "match": 300,
        "score": 100,
        "store": 800,
    }
    return found


class TestStages:
    def test_http_and_framework_is_what_the_api_spent_beyond_the_stages(self):
        assert stages(2_000).total_us == 1_305
        assert stages(2_000).framework_us == 695

    def test_without_a_run_to_compare_there_is_no_framework_share(self):
        assert stages(None).framework_us is None

    def test_the_table_has_a_column_per_reference_and_a_row_per_stage(self):
        lines = stages_table([stages(2_000), stages(None)])

        assert lines[0].count("groups of 8") == 2
        assert "| HTTP and framework (API measured − sum) | 695 | – |" in lines
        assert "| **sum of the stages** | 1,305 | 1,305 |" in lines

    def test_the_fixed_rate_reference_is_the_target_rate_with_its_groups(self):
        results = BackendResults("sqlite")
        paced = window(500, 1_000)
        paced.cpu = Counter({API_ROLE: 2.0})
        results.windows = [window(100, 200), paced]
        results.transactions = {paced.name: 250}
        results.store_before = {paced.name: 51_000}

        found = rate_reference(results)

        assert found == ("500/s fixed rate", 4, pytest.approx(2_000), 51_000)

    def test_without_the_target_rate_the_lowest_rate_is_the_reference(self):
        results = BackendResults("sqlite")
        results.windows = [window(100, 200), window(250, 500)]

        found = rate_reference(results)

        assert found is not None
        assert found.name == "100/s fixed rate"
        assert found.group == 1

    def test_the_wrk_reference_is_one_api_process_at_the_most_connections(self):
        results = BackendResults("sqlite")
        for workers, connections, transactions in (
            (1, 16, 100),
            (1, 64, 50),
            (2, 64, 20),
        ):
            run = WrkRun("sqlite", workers, connections, False, f"c{connections}")
            run.result = WrkResult(400, 1.0, 400, 0, {}, {})
            run.ids = ["id"] * 400
            run.transactions = transactions
            run.cpu = Counter({API_ROLE: 0.8})
            run.store_before = 50_000 + connections
            results.wrk.append(run)

        found = wrk_reference(results)

        assert found == (
            "wrk, 1 API process, 64 connections",
            8,
            pytest.approx(2_000),
            50_064,
        )

    def test_with_no_run_answered_there_is_no_reference(self):
        results = BackendResults("sqlite")

        assert rate_reference(results) is None
        assert wrk_reference(results) is None


class TestTiming:
    def test_a_timed_function_returns_what_it_did_and_adds_its_cpu(self):
        spent: Counter[str] = Counter()
        timed = _stopwatch(spent, "match", lambda a, b=0: a + b)

        assert timed(2, b=3) == 5
        assert spent["match"] >= 0
        assert "match" in spent

    def test_the_intakes_functions_are_put_back_afterwards(self):
        before = {(module, name): getattr(module, name) for module, name, _ in TIMED}

        with _timing(Counter()):
            assert (
                leads.intake._without_matches
                is not before[(leads.intake, "_without_matches")]
            )

        assert all(getattr(m, n) is f for (m, n), f in before.items())


def wrk_run(workers: int, connections: int, accepted: int, drains: bool = False):
    run = WrkRun("sqlite", workers, connections, drains, f"w{workers}c{connections}")
    run.result = WrkResult(accepted, 10.0, accepted, 0, {}, {})
    return run


def ran(*windows: Window, wrk: tuple[WrkRun, ...] = ()) -> BackendResults:
    results = BackendResults("sqlite", wrk=list(wrk), windows=list(windows))
    results.durations = {"fixed rates": 60.0}
    return results


def labelled(figures) -> dict[str, dict]:
    return {figure.label: figure.as_json() for figure in figures}


class TestHeadlines:
    def test_saturation_is_the_best_set_up_judged_against_the_target(self):
        beside = wrk_run(2, 64, 6_000, drains=True)
        beside.synced, beside.wall_s, beside.drains_seen = (100, 2_100), 10.0, True
        runs = (wrk_run(1, 16, 9_000), wrk_run(2, 64, 12_000), beside)

        figures = labelled(headlines(FULL, [ran(wrk=runs)], []))

        idle = figures["sqlite: leads/s with wrk, drains idle"]
        assert (idle["value"], idle["verdict"]) == (1_200.0, "met")
        assert idle["target"].startswith("≥ 1,000 leads/s")
        assert "n8n documents about 220" in idle["target"]
        assert "`ORCH_API_WORKERS=2`, 64 connections: the best of 2" in idle["note"]
        running = figures["sqlite: leads/s with wrk, drains running"]
        assert (running["value"], running["verdict"]) == (600.0, "no target")
        assert "200 leads/s synced" in running["note"]
        assert "NOT seen" not in running["note"]

    def test_p99_at_each_rate_run_and_the_target_rate_judged(self):
        figures = labelled(
            headlines(FULL, [ran(window(100, 200), window(500, 1_000))], [WRK_MISSING])
        )

        low = figures["sqlite: p99 at 100 leads/s offered, open loop"]
        judged = figures["sqlite: p99 at 500 leads/s offered, open loop"]
        assert (low["value"], low["verdict"]) == (5.0, "no target")
        assert (judged["value"], judged["target"]) == (5.0, P99_TARGET)
        assert judged["verdict"] == "met"

    def test_errors_at_the_target_rate_miss_it(self):
        refused = window(500, 1_000, statuses=503)

        figures = labelled(headlines(FULL, [ran(refused)], [WRK_MISSING]))

        assert (
            figures["sqlite: p99 at 500 leads/s offered, open loop"]["verdict"]
            == "missed"
        )

    def test_a_ladder_saturated_below_the_target_rate_says_it_missed_it(self):
        slow = half_answered(window(250, 500))

        figures = labelled(headlines(FULL, [ran(window(100, 200), slow)], []))

        target = figures["sqlite: p99 at 500 leads/s offered, open loop"]
        assert (target["verdict"], target["target"]) == ("skipped", P99_TARGET)
        assert target["reason"].startswith("not reached, so missed: offered 250/s")
        assert (
            "saturated"
            in figures["sqlite: p99 at 250 leads/s offered, open loop"]["note"]
        )

    def test_a_target_rate_not_offered_says_so(self):
        plan = parse_plan(["--rates", "100,250", "--no-drains"])

        figures = labelled(headlines(plan, [ran(window(100, 200))], [WRK_MISSING]))

        target = figures["sqlite: p99 at 500 leads/s offered, open loop"]
        assert target["reason"] == "500/s is not among --rates"
        assert figures["sqlite: leads/s with wrk, drains idle"]["reason"] == (
            WRK_MISSING
        )
        assert figures["sqlite: leads/s with wrk, drains running"]["reason"] == (
            "--no-drains"
        )

    def test_a_failed_part_gives_its_problem_as_the_reason(self):
        results = ran()
        results.problems = ["saturation: wrk exited with 1: boom"]

        figures = labelled(headlines(FULL, [results], []))

        idle = figures["sqlite: leads/s with wrk, drains idle"]
        assert idle["reason"] == "saturation: wrk exited with 1: boom"

    def test_a_backend_that_did_not_run_is_one_skipped_row(self):
        plan = parse_plan(["--backends", "postgresql"])
        note = "postgresql skipped: ORCH_TEST_POSTGRES_URL is not set"

        (figure,) = headlines(plan, [], [note])

        assert (figure.label, figure.verdict, figure.reason) == (
            "postgresql: ingest",
            "skipped",
            note,
        )

"""Scoring by the rules alone: which rules fire, their reasons, and the clamp."""

from __future__ import annotations

from pathlib import Path

import pytest

from leads.scoring import Scorer, load_config, load_scorer
from leads.settings import Settings

RULES = """
rules:
  base: 20
  fit:
    title_seniority:
      - {level: assistant, points: 0, keywords: [assistant to]}
      - {level: c_level, points: 25, keywords: [ceo, chief, co-founder]}
      - {level: vp, points: 20, keywords: [vp, vice president]}
      - {level: director, points: 15, keywords: [director]}
      - {level: manager, points: 8, patterns: ['\\bmanag(er|ing)\\b']}
    company_size:
      fields: [employees, company_size]
      ranges:
        - {max: 10, points: 0}
        - {min: 11, max: 50, points: 5}
        - {min: 51, max: 200, points: 10}
        - {min: 201, max: 1000, points: 15}
        - {min: 1001, points: 20, label: enterprise}
    industry: {fields: [industry], points: 10, values: [software, fintech]}
    country: {points: 5, codes: [US, GB]}
    free_mail: -10
  intent:
    source: {demo_request: 25, referral: 15, cold_list: -30}
    activity:
      - name: page_views
        fields: [page_views]
        ranges: [{min: 5, max: 19, points: 5}, {min: 20, points: 10}]
"""


@pytest.fixture
def scorer(tmp_path: Path) -> Scorer:
    (tmp_path / "scoring.yaml").write_text(RULES, encoding="utf-8")
    return load_scorer(tmp_path, tmp_path / "no-models")


class TestTitleSeniority:
    @pytest.mark.parametrize(
        ("title", "reason"),
        [
            ("Director of Marketing", "title_seniority:director +15"),
            ("VP, Sales", "title_seniority:vp +20"),
            ("Vice  President Engineering", "title_seniority:vp +20"),
            ("Co-Founder & CEO", "title_seniority:c_level +25"),
            ("Account Manager", "title_seniority:manager +8"),
        ],
    )
    def test_a_matching_title_gives_its_level_points(self, scorer, title, reason):
        result = scorer.score({"job_title": title})

        assert result.reasons == (reason,)
        assert result.value == 20 + int(reason.rsplit(" ", 1)[1])

    def test_the_first_level_that_matches_wins(self, scorer):
        result = scorer.score({"job_title": "VP and Director of Sales"})

        assert result.reasons == ("title_seniority:vp +20",)

    def test_a_zero_point_level_stops_the_search_without_a_reason(self, scorer):
        result = scorer.score({"job_title": "Assistant to the Director"})

        assert result.value == 20
        assert result.reasons == ()

    def test_keywords_match_whole_words_only(self, scorer):
        assert scorer.score({"job_title": "MVP Engineer"}).reasons == ()
        assert scorer.score({"job_title": "Redirector"}).reasons == ()


class TestCompanySize:
    @pytest.mark.parametrize(
        ("written", "reason"),
        [
            ("1,000", "company_size:201-1000 +15"),
            ("5,000", "company_size:enterprise +20"),
            ("51-200", "company_size:51-200 +10"),
            (30, "company_size:11-50 +5"),
            ("10000+", "company_size:enterprise +20"),
        ],
    )
    def test_sizes_written_as_forms_write_them(self, scorer, written, reason):
        result = scorer.score({"custom": {"Company Size": written}})

        assert result.reasons == ((reason,) if reason else ())

    @pytest.mark.parametrize("written", ["Select", "N/A", "", "lots"])
    def test_a_placeholder_or_unreadable_size_gives_nothing(self, scorer, written):
        assert scorer.score({"custom": {"employees": written}}).reasons == ()

    def test_the_first_field_with_a_number_is_read(self, scorer):
        lead = {"custom": {"employees": "Select", "company_size": "120"}}

        assert scorer.score(lead).reasons == ("company_size:51-200 +10",)


class TestOtherFitRules:
    def test_a_listed_industry_in_any_case(self, scorer):
        result = scorer.score({"custom": {"Industry": " FinTech "}})

        assert result.reasons == ("industry:fintech +10",)

    def test_a_listed_country(self, scorer):
        assert scorer.score({"country": "GB"}).reasons == ("country:GB +5",)
        assert scorer.score({"country": "FR"}).reasons == ()

    def test_a_free_mailbox_costs_points(self, scorer):
        result = scorer.score({"flags": ["free_mail"]})

        assert result.value == 10
        assert result.reasons == ("free_mail -10",)


class TestIntent:
    @pytest.mark.parametrize("source", ["demo_request", "Demo Request", "DEMO-REQUEST"])
    def test_a_source_in_any_spelling(self, scorer, source):
        result = scorer.score({"source": source})

        assert result.reasons == ("source:demo_request +25",)

    def test_activity_ranges(self, scorer):
        assert scorer.score({"custom": {"page_views": "7"}}).reasons == (
            "page_views:5-19 +5",
        )
        assert scorer.score({"custom": {"page_views": 40}}).reasons == (
            "page_views:20+ +10",
        )
        assert scorer.score({"custom": {"page_views": 2}}).reasons == ()


def test_every_rule_that_fired_is_a_reason_and_the_sum_is_clamped_to_100(scorer):
    lead = {
        "job_title": "Chief Revenue Officer",
        "country": "US",
        "source": "demo request",
        "flags": ["free_mail"],
        "custom": {"employees": "2,500", "industry": "software", "page_views": "25"},
    }

    result = scorer.score(lead)

    assert result.reasons == (
        "title_seniority:c_level +25",
        "company_size:enterprise +20",
        "industry:software +10",
        "country:US +5",
        "free_mail -10",
        "source:demo_request +25",
        "page_views:20+ +10",
    )
    assert 20 + 25 + 20 + 10 + 5 - 10 + 25 + 10 > 100
    assert result.value == 100
    assert result.model_version is None


def test_a_score_below_zero_is_clamped_to_zero(scorer):
    result = scorer.score({"source": "Cold List", "flags": ["free_mail"]})

    assert result.value == 0
    assert result.reasons == ("free_mail -10", "source:cold_list -30")


def test_a_lead_no_rule_knows_gets_the_base(scorer):
    assert scorer.score({"email": "a@example.com", "custom": {}}).value == 20


def test_score_many_scores_each_lead_in_order(scorer):
    leads = [{"country": "US"}, {"flags": ["free_mail"]}, {}]

    assert scorer.score_many(leads) == [scorer.score(lead) for lead in leads]


def test_the_shipped_rules_fire_on_a_typical_business_lead():
    config = load_config(Settings().config_dir / "scoring.yaml")
    scorer = Scorer(config)
    lead = {
        "job_title": "Head of Growth",
        "country": "DE",
        "source": "Webinar",
        "flags": ["free_mail"],
        "custom": {"employees": "51-200", "visits": "4"},
    }

    result = scorer.score(lead)

    assert result.reasons == (
        "title_seniority:head +15",
        "company_size:51-200 +10",
        "country:DE +5",
        "free_mail -10",
        "source:webinar +10",
        "visits:3-9 +5",
    )
    assert result.value == 20 + 15 + 10 + 5 - 10 + 10 + 5

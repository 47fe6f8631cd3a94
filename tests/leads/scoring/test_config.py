"""Loading `scoring.yaml`: the shipped file works, and a wrong one names its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from leads.scoring import ScoringConfigError, load_config
from leads.settings import Settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scoring.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_config_loads_with_rules_of_every_kind():
    config = load_config(Settings().config_dir / "scoring.yaml")

    assert config.combine == "model_plus_fit"
    assert config.rules.fit.title_seniority
    assert config.rules.fit.company_size is not None
    assert "NO" in config.rules.fit.country.codes
    assert config.rules.fit.free_mail < 0
    assert config.rules.intent.source
    assert config.rules.intent.activity


def test_an_empty_file_means_no_rules_and_the_defaults(tmp_path):
    config = load_config(write(tmp_path, ""))

    assert config.rules.base == 0
    assert config.model.version is None


class TestErrorsNameTheKeyPath:
    def test_a_pattern_that_is_not_a_regular_expression(self, tmp_path):
        path = write(
            tmp_path,
            """
rules:
  fit:
    title_seniority:
      - {level: vp, points: 20, keywords: [vp]}
      - {level: head, points: 15, patterns: ['head(of']}
""",
        )

        with pytest.raises(ScoringConfigError) as caught:
            load_config(path)

        message = str(caught.value)
        assert message.startswith(str(path))
        assert "rules.fit.title_seniority[1].patterns" in message
        assert "'head(of'" in message and "not a regular expression" in message

    def test_an_unknown_key(self, tmp_path):
        path = write(tmp_path, "rules:\n  fit:\n    free_male: -10\n")

        with pytest.raises(ScoringConfigError, match=r"rules\.fit\.free_male: unknown"):
            load_config(path)

    def test_points_out_of_range(self, tmp_path):
        path = write(tmp_path, "rules:\n  intent:\n    source:\n      referral: 500\n")

        with pytest.raises(
            ScoringConfigError, match=r"rules\.intent\.source\.referral"
        ):
            load_config(path)

    def test_a_range_whose_min_is_above_its_max(self, tmp_path):
        path = write(
            tmp_path,
            """
rules:
  fit:
    company_size:
      fields: [employees]
      ranges: [{min: 200, max: 51, points: 10}]
""",
        )

        with pytest.raises(ScoringConfigError) as caught:
            load_config(path)

        assert "rules.fit.company_size.ranges[0]: min 200 is above max 51" in str(
            caught.value
        )

    def test_an_unquoted_norway_read_by_yaml_as_false(self, tmp_path):
        path = write(
            tmp_path,
            "rules:\n  fit:\n    country:\n      points: 5\n      codes: [SE, NO]\n",
        )

        with pytest.raises(ScoringConfigError) as caught:
            load_config(path)

        assert "rules.fit.country.codes" in str(caught.value)
        assert "quote it: 'NO'" in str(caught.value)

    def test_a_country_that_is_not_an_iso_code(self, tmp_path):
        path = write(
            tmp_path, "rules:\n  fit:\n    country: {points: 5, codes: [UK]}\n"
        )

        with pytest.raises(ScoringConfigError, match=r"rules\.fit\.country\.codes.*UK"):
            load_config(path)

    def test_a_model_version_that_could_leave_the_model_dir(self, tmp_path):
        path = write(tmp_path, "model:\n  version: ../../etc\n")

        with pytest.raises(ScoringConfigError, match=r"model\.version"):
            load_config(path)

    def test_an_unknown_way_to_combine(self, tmp_path):
        path = write(tmp_path, "combine: average\n")

        with pytest.raises(ScoringConfigError, match=r"combine: Input should be"):
            load_config(path)

    def test_two_spellings_of_one_source(self, tmp_path):
        path = write(
            tmp_path,
            "rules:\n  intent:\n    source: {demo_request: 20, Demo Request: 25}\n",
        )

        with pytest.raises(ScoringConfigError, match="same source"):
            load_config(path)


def test_a_file_that_is_not_yaml_is_refused_naming_the_file(tmp_path):
    path = write(tmp_path, "rules: [unclosed\n")

    with pytest.raises(ScoringConfigError, match="is not valid YAML"):
        load_config(path)


def test_a_missing_file_is_refused_naming_it(tmp_path):
    with pytest.raises(ScoringConfigError, match="cannot be read"):
        load_config(tmp_path / "scoring.yaml")

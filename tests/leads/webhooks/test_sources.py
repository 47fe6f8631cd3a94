"""`config/webhooks.yaml`: the shipped sources load, and mistakes are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from leads.webhooks.sources import (
    SignatureFormat,
    WebhookConfigError,
    configured_sources,
    load_sources,
)

CONFIG = Path(__file__).parents[3] / "config"


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "webhooks.yaml").write_text(text)
    return tmp_path


def test_the_shipped_file_has_a_source_for_every_signature_format():
    sources = load_sources(CONFIG)

    assert {source.signature for source in sources.values()} == set(SignatureFormat)
    assert all(source.name == name for name, source in sources.items())


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (
            "sources: {forms: {secret_env: X, signatur: token}}",
            "sources.forms.signatur",
        ),
        ("sources: {forms: {}}", "sources.forms.secret_env"),
        ("sources: {forms: {secret_env: lower}}", "sources.forms.secret_env"),
        ("sources: {Forms!: {secret_env: X}}", "Forms!"),
        (
            "sources: {h: {secret_env: X, payload: hubspot, lead: data}}",
            "hubspot",
        ),
        ("sources: {f: {secret_env: X, delivery_id: {}}}", "exactly one"),
    ],
)
def test_a_mistake_is_refused_naming_where_it_is(tmp_path, text, named):
    with pytest.raises(WebhookConfigError) as caught:
        load_sources(write(tmp_path, text))

    assert named in str(caught.value)


def test_the_secret_comes_from_its_variable_before_any_derived_one(monkeypatch):
    source = load_sources(CONFIG)["forms"]
    monkeypatch.delenv(source.secret_env, raising=False)

    derived = source.secret("project-key")
    monkeypatch.setenv(source.secret_env, "chosen")

    assert derived.startswith("whsec_dev_")
    assert derived != load_sources(CONFIG)["zapier"].secret("project-key")
    assert source.secret("project-key") == "chosen"
    monkeypatch.delenv(source.secret_env)
    assert source.secret(None) is None


def test_an_edited_file_is_read_again(tmp_path):
    folder = write(tmp_path, "sources: {a: {secret_env: A}}")
    assert list(configured_sources(folder)) == ["a"]

    write(tmp_path, "sources: {a: {secret_env: A}, bb: {secret_env: B}}")

    assert list(configured_sources(folder)) == ["a", "bb"]

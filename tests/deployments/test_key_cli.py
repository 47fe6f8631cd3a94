"""`orchestrator keys`, and the development key `orchestrator up` makes."""

from __future__ import annotations

import stat

import pytest
from typer.testing import CliRunner

from deployments.cli import app
from deployments.key_cli import (
    api_client,
    development_key,
    development_key_file,
    refused_key,
)
from leads.settings import Settings, get_settings
from leads.store.api_keys import create_key, find_key, list_keys


@pytest.fixture
def env(store, tmp_path, monkeypatch):
    monkeypatch.setenv("ORCH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ORCH_DATABASE_URL", store.url)
    get_settings.cache_clear()
    yield store
    get_settings.cache_clear()


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_create_prints_a_working_key_once_and_keeps_only_its_digest(env):
    result = invoke("keys", "create", "--tenant", "acme", "--scope", "write")

    assert result.exit_code == 0, result.output
    secret = result.stdout.strip()
    info = find_key(env, secret)
    assert (info.tenant_id, info.scope) == ("acme", "write")
    with env.engine.connect() as connection:
        stored = connection.exec_driver_sql("SELECT * FROM api_keys").all()
    assert secret not in repr(stored)
    assert "Shown once" in result.stderr


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--tenant", "Acme Corp", "--scope", "read"], "--tenant"),
        (["--tenant", "acme", "--scope", "root"], "--scope"),
    ],
)
def test_create_refuses_a_bad_tenant_or_scope_naming_it(env, args, named):
    result = invoke("keys", "create", *args)

    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {named}:")
    assert list_keys(env) == []


def test_list_shows_keys_without_their_secrets_and_revoke_stops_one(env):
    secret = invoke("keys", "create", "--tenant", "acme", "--scope", "read").stdout
    key_id = secret.split("_")[1]

    revoked = invoke("keys", "revoke", key_id)
    listed = invoke("keys", "list", "--tenant", "acme")

    assert revoked.exit_code == 0, revoked.output
    assert find_key(env, secret.strip()) is None
    assert key_id in listed.stdout and "revoked" in listed.stdout
    assert secret.strip() not in listed.stdout
    assert invoke("keys", "revoke", "ffffffffffff").exit_code == 1


def test_keys_need_a_migrated_store(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ORCH_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    get_settings.cache_clear()
    try:
        result = invoke("keys", "list")
    finally:
        get_settings.cache_clear()

    assert result.exit_code == 1
    assert "orchestrator db upgrade" in result.stderr


def test_development_makes_one_admin_key_on_the_first_start_only(store, tmp_path):
    settings = Settings(data_dir=tmp_path, database_url=store.url)

    first = development_key(settings, store)
    second = development_key(settings, store)

    info = find_key(store, first)
    assert (info.tenant_id, info.scope) == ("default", "admin")
    assert second is None
    kept = development_key_file(settings)
    assert kept.read_text().strip() == first
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    # Written beside it and renamed into place: no partial file is left.
    assert [p.name for p in tmp_path.iterdir() if "api-key" in p.name] == ["api-key"]


def test_production_makes_no_key_by_itself(store, tmp_path):
    settings = Settings(data_dir=tmp_path, database_url=store.url, env="production")

    assert development_key(settings, store) is None
    assert list_keys(store) == []
    assert not development_key_file(settings).exists()


def test_commands_that_call_the_api_send_orch_api_key_else_the_development_key(
    store, serve_api, tmp_path
):
    settings = Settings(
        data_dir=tmp_path,
        database_url=store.url,
        prefect_api_url="http://127.0.0.1:9/api",
    )
    server = serve_api(settings)
    at = {"api_port": server.port, "data_dir": tmp_path, "database_url": store.url}

    with api_client(Settings(**at)) as client:
        keyless = client.get("/api/leads")
    development_key(settings, store)
    other = create_key(store, "acme", "read").secret
    with api_client(Settings(**at)) as client:
        kept = client.get("/api/leads")
    with api_client(Settings(**at, api_key=other)) as client:
        given = client.get("/api/leads")
        written = client.post("/api/leads", json={"email": "ada@example.com"})

    assert keyless.status_code == 401
    assert "ORCH_API_KEY" in refused_key(keyless)
    assert kept.status_code == 200
    assert given.status_code == 200
    assert "scope write" in refused_key(written)


def test_import_through_the_api_without_a_key_says_how_to_get_one(
    store, serve_api, tmp_path, monkeypatch
):
    server = serve_api(Settings(data_dir=tmp_path / "api", database_url=store.url))
    source = tmp_path / "leads.csv"
    source.write_text("email\nada@example.com\n")
    monkeypatch.setenv("ORCH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ORCH_API_PORT", str(server.port))
    get_settings.cache_clear()
    try:
        result = invoke("import", str(source))
    finally:
        get_settings.cache_clear()

    assert result.exit_code == 1
    assert "ORCH_API_KEY" in result.stderr
    assert "orchestrator keys create" in result.stderr

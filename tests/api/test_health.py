"""Liveness, status and the published API description."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from leads.settings import Settings
from leads.store.database import create_store_engine
from leads.store.schema import upgrade


def test_health_is_ok_while_the_store_answers(client):
    response = client.get("/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_status_reports_version_store_and_counts(client, store):
    client.post("/api/leads", json={"email": "s1@example.com"})
    client.post("/api/leads", json={"phone": "+14155550100"})

    status = client.get("/api/status").json()

    assert status["version"] == "0.1.0"
    assert status["store"]["backend"] == store.backend
    assert status["store"]["state"] == "ok"
    assert status["store"]["revision"] == status["store"]["head"]
    assert status["leads"] == {"total": 2, "by_status": {"new": 2}}
    assert status["outbox"] == {
        "crm_sync": {"pending": 2},
        "sequence_enrolment": {"pending": 1},
    }


def test_status_hides_the_store_password(client, store):
    assert ":secret@" not in client.get("/api/status").json()["store"]["url"]


def test_openapi_documents_every_lead_route(client):
    spec = client.get("/api/openapi.json").json()

    assert set(spec["paths"]) >= {
        "/health",
        "/api/status",
        "/api/leads",
        "/api/leads/batch",
        "/api/leads/{lead_id}",
        "/api/leads/{lead_id}/timeline",
    }
    assert set(spec["paths"]["/api/leads/{lead_id}"]) == {
        "get",
        "put",
        "patch",
        "delete",
    }
    assert client.get("/api/docs").status_code == 200


def test_unknown_route_is_a_problem_document(client):
    response = client.get("/api/nothing-here")

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def test_status_is_503_when_the_store_is_behind_the_code(
    serve_api, new_store_url, tmp_path
):
    url = new_store_url("sqlite")
    engine = create_store_engine(url)
    upgrade(engine)
    server = serve_api(Settings(data_dir=tmp_path, database_url=url))
    http = server.client()
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM alembic_version"))
    engine.dispose()

    with http:
        response = http.get("/api/status")

    assert response.status_code == 503
    assert response.json()["store"]["state"] == "needs_upgrade"
    assert "leads" not in response.json()


@pytest.mark.postgres
def test_health_is_503_when_the_store_is_unreachable(
    serve_api, new_store_url, postgres_server, tmp_path
):
    url = new_store_url("postgresql")
    engine = create_store_engine(url)
    upgrade(engine)
    engine.dispose()
    server = serve_api(Settings(data_dir=tmp_path, database_url=url))
    http = server.client()
    assert http.get("/health").status_code == 200
    name = make_url(url).database
    admin = make_url(postgres_server).set(drivername="postgresql")
    with psycopg.connect(
        admin.render_as_string(hide_password=False), autocommit=True
    ) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')

    health = http.get("/health")
    create = http.post("/api/leads", json={"email": "x@example.com"})
    http.close()

    assert health.status_code == 503
    assert create.status_code == 503
    assert create.headers["content-type"] == "application/problem+json"
    assert create.headers["retry-after"]


def test_docs_page_loads_its_assets_from_the_api_itself(client):
    page = client.get("/api/docs").text

    assert "cdn." not in page and "https://" not in page
    assert client.get("/api/docs/assets/swagger-ui-bundle.js").status_code == 200
    assert client.get("/api/docs/assets/swagger-ui.css").status_code == 200

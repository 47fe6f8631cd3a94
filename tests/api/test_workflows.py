"""Workflow endpoints when Prefect cannot answer: intake still works, runs say why."""

from __future__ import annotations

from uuid import UUID


def test_trigger_with_prefect_down_is_503_and_names_the_cause(client):
    response = client.post(
        "/api/workflows/trigger", json={"workflow_id": "welcome_sequence"}
    )

    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert "Prefect server cannot be reached" in response.json()["detail"]


def test_status_with_prefect_down_is_503(client):
    response = client.get(f"/api/workflows/{UUID(int=7)}/status")

    assert response.status_code == 503


def test_a_run_id_that_is_not_a_uuid_is_422(client):
    response = client.get("/api/workflows/run-1/status")

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "run_id"


def test_a_trigger_without_a_workflow_id_is_422(client):
    response = client.post("/api/workflows/trigger", json={"lead_id": "x"})

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "workflow_id"


def test_leads_are_taken_in_while_prefect_is_down(client):
    response = client.post("/api/leads", json={"email": "down@example.com"})

    assert response.status_code == 201


def test_status_reports_prefect_unreachable(client):
    prefect = client.get("/api/status").json()["prefect"]

    assert prefect["reachable"] is False
    assert prefect["error"]


def test_a_misspelt_key_is_422_not_a_silent_drain(client):
    response = client.post(
        "/api/workflows/trigger",
        json={"workflow_id": "welcome_sequence", "leadid": "x"},
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "leadid"


def test_a_lead_id_and_lead_data_together_are_422(client, store):
    response = client.post(
        "/api/workflows/trigger",
        json={
            "workflow_id": "welcome_sequence",
            "lead_id": "5d4bd39e-7b0e-4b5e-8a0c-9a9f0d0f0f0f",
            "lead_data": {"email": "both@example.com"},
        },
    )

    assert response.status_code == 422
    assert "not both" in response.json()["errors"][0]["message"]
    assert (
        client.get("/api/leads", params={"email": "both@example.com"}).json()["data"]
        == []
    )

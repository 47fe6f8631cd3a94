"""Input that once broke the API: each is refused by name and writes nothing."""

from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from leads.store.tables import Lead


def lead_count(store) -> int:
    with store.engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(Lead)).scalar_one()


def send(client, method: str, path: str, body):
    """Sends `body` as Python's json writes it: \\u escapes, NaN allowed."""
    return client.request(
        method,
        path,
        content=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )


def cursor(position) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


UNSTORABLE = [
    ({"custom": {"k": "\udc00"}}, "custom.k", "invalid_unicode"),
    ({"utm": "\ud800"}, "custom.utm", "invalid_unicode"),
    ({"first_name": "A\u0000B"}, "first_name", "nul_character"),
    ({"custom": {"k": "x\u0000"}}, "custom.k", "nul_character"),
    ({"a\u0000b": 1}, "custom", "invalid_key"),
    ({"custom": {"x": float("nan")}}, "custom.x", "not_finite"),
    ({"custom": {"x": float("-inf")}}, "custom.x", "not_finite"),
    ({"first_name": "\ufb2c" * 255}, "first_name", "too_long"),
    ({"captured_at": "0001-01-01T00:00:00+14:00"}, "captured_at", "invalid_datetime"),
]


@pytest.mark.parametrize(("extra", "field", "reason"), UNSTORABLE)
def test_unstorable_values_are_422_naming_the_field(
    client, store, extra, field, reason
):
    response = send(client, "POST", "/api/leads", {"email": "h@example.com", **extra})

    assert response.status_code == 422, response.text
    assert {(e["field"], e["reason"]) for e in response.json()["errors"]} == {
        (field, reason)
    }
    assert lead_count(store) == 0


def test_deep_nesting_in_custom_is_refused(client, store):
    deep: list = []
    for _ in range(600):
        deep = [deep]

    response = client.post(
        "/api/leads", json={"email": "d@example.com", "custom": {"a": deep}}
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["reason"] == "too_deep"
    assert lead_count(store) == 0


def test_a_poison_item_is_rejected_and_the_rest_of_the_batch_written(client, store):
    items = [{"email": "good@example.com"}] + [
        {"email": f"bad{i}@example.com", **extra}
        for i, (extra, _, _) in enumerate(UNSTORABLE)
    ]

    response = send(client, "POST", "/api/leads/batch", items)

    assert response.status_code == 200
    outcomes = [r["outcome"] for r in response.json()["results"]]
    assert outcomes == ["created"] + ["rejected"] * len(UNSTORABLE)
    assert lead_count(store) == 1


@pytest.mark.parametrize(
    "body",
    [b"\xff\xfe{", b"[" * 100_000 + b"]" * 100_000, b'{"email": }'],
    ids=["invalid-utf8", "deep-json", "broken-json"],
)
@pytest.mark.parametrize("path", ["/api/leads", "/api/leads/batch"])
def test_unparseable_bodies_are_422_invalid_json_on_every_route(client, body, path):
    response = client.post(
        path, content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code in (413, 422), response.text
    if response.status_code == 422:
        assert response.json()["errors"][0] == {
            "field": "body",
            "reason": "invalid_json",
            "message": response.json()["errors"][0]["message"],
        }


@pytest.mark.parametrize(
    "value",
    [
        cursor(["2024-01-01T00:00:00+00:00", {"a": 1}]),
        cursor(["2024-01-01T00:00:00+00:00", None]),
        cursor(["2024-01-01T00:00:00+00:00", 5]),
        cursor(["2024-01-01T00:00:00+00:00", "a\u0000"]),
        cursor(["0001-01-01T00:00:00+05:00", "5d4bd39e-7b0e-4b5e-8a0c-9a9f0d0f0f0f"]),
    ],
)
def test_tampered_list_cursors_are_422(client, value):
    response = client.get("/api/leads", params={"cursor": value})

    assert response.status_code == 422
    assert response.json()["errors"][0]["reason"] == "invalid_cursor"


@pytest.mark.parametrize("value", [cursor([True]), cursor([2**70]), cursor([-(2**64)])])
def test_tampered_timeline_cursors_are_422(client, value):
    lead = client.post("/api/leads", json={"email": "t@example.com"}).json()

    response = client.get(f"/api/leads/{lead['id']}/timeline", params={"cursor": value})

    assert response.status_code == 422


@pytest.mark.parametrize(
    "params",
    [
        {"created_after": "0001-01-01T00:00:00+05:00"},
        {"created_before": "9999-12-31T23:59:59-14:00"},
    ],
)
def test_out_of_range_filters_are_422(client, params):
    response = client.get("/api/leads", params=params)

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == next(iter(params))


@pytest.mark.parametrize("lead_id", ["a%00b", "x" * 40, "not-a-uuid"])
def test_ids_that_are_not_lead_ids_are_404(client, lead_id):
    assert client.get(f"/api/leads/{lead_id}").status_code == 404
    assert client.get(f"/api/leads/{lead_id}/timeline").status_code == 404
    assert (
        client.patch(f"/api/leads/{lead_id}", json={"company": "x"}).status_code == 404
    )


def test_blank_custom_values_never_erase_stored_ones(client):
    client.post(
        "/api/leads",
        json={"email": "c@example.com", "custom": {"k": "v", "n": {"x": 1}, "l": [1]}},
    )

    lead = client.post(
        "/api/leads",
        json={
            "email": "c@example.com",
            "k": "  ",
            "custom": {"n": {}, "l": [], "z": "\u200b"},
        },
    ).json()

    assert lead["custom"] == {"k": "v", "n": {"x": 1}, "l": [1]}


def test_patch_custom_null_clears_it(client):
    lead = client.post("/api/leads", json={"email": "n@example.com", "k": 1}).json()

    patched = client.patch(f"/api/leads/{lead['id']}", json={"custom": None}).json()

    assert patched["custom"] == {}


def test_taking_an_email_being_created_at_the_same_time_is_409_not_500(client):
    outcomes = []
    for round_ in range(10):
        target = f"race{round_}@example.com"
        lead = client.post(
            "/api/leads", json={"email": f"mover{round_}@example.com"}
        ).json()
        with ThreadPoolExecutor(2) as pool:
            moved = pool.submit(
                client.patch, f"/api/leads/{lead['id']}", json={"email": target}
            )
            created = pool.submit(client.post, "/api/leads", json={"email": target})
            outcomes.append((moved.result().status_code, created.result().status_code))

    assert all(patch in (200, 409) for patch, _ in outcomes), outcomes
    assert all(post in (200, 201) for _, post in outcomes), outcomes


def test_problem_documents_always_carry_an_errors_list(client):
    for response in [
        client.get("/api/leads/5d4bd39e-7b0e-4b5e-8a0c-9a9f0d0f0f0f"),
        client.delete("/api/leads"),
        client.get("/nowhere"),
    ]:
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"] == []

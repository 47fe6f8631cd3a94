"""The import endpoints over real HTTP, on SQLite and PostgreSQL.

The live API's Prefect URL is a closed port, so no flow run starts: an upload
stays queued for the sweeper, and these tests run the import themselves.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from leads import importer
from leads.settings import MIB, Settings
from leads.store import Store
from leads.store import imports as stored
from leads.store.tables import Lead, LeadImport

FIXTURES = Path(__file__).parents[1] / "fixtures" / "csv"
SALESFORCE_LEADS = FIXTURES / "salesforce_trailhead" / "Lead_Data.csv"
OUTCOMES = ("created", "updated", "unchanged", "merged", "possible_duplicate")


def outcomes(**given: int) -> dict[str, int]:
    return {name: given.get(name, 0) for name in (*OUTCOMES, "rejected")}


def upload(
    client: httpx.Client,
    content: bytes | Path,
    *,
    mapping: str | None = None,
    dry_run: bool | None = None,
) -> httpx.Response:
    data = content.read_bytes() if isinstance(content, Path) else content
    name = content.name if isinstance(content, Path) else "leads.csv"
    form: dict[str, str] = {}
    if mapping is not None:
        form["mapping"] = mapping
    if dry_run is not None:
        form["dry_run"] = "true" if dry_run else "false"
    return client.post(
        "/api/imports", files={"file": (name, data, "text/csv")}, data=form
    )


def run_queued(store: Store, import_id: str) -> dict[str, int]:
    """Runs the import as the sweeper's flow run would, here."""
    return importer.run(store, import_id, owner=f"test-{import_id}", region="US")


def count(store: Store, model: type) -> int:
    with store.engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(model)).scalar_one()


def kept_uploads(folder: Path) -> list[Path]:
    return sorted(folder.iterdir()) if folder.exists() else []


def assert_problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert body["detail"]
    return body


def header_of(path: Path) -> list[str]:
    """The file's header line, as its columns in order."""
    return path.read_bytes().splitlines()[0].decode("ascii").split(",")


def csv_bytes(*lines: str, encoding: str = "utf-8") -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode(encoding)


class TestUpload:
    def test_is_202_and_queued_without_prefect_and_nothing_is_lost(self, client, store):
        response = upload(client, SALESFORCE_LEADS)

        assert response.status_code == 202, response.text
        body = response.json()
        location = f"/api/imports/{body['id']}"
        assert response.headers["location"] == location
        assert body["status_url"] == location
        assert body["rejects_url"] == f"{location}/rejects.csv"
        assert body["status"] == "queued"
        assert body["flow_run_id"] is None
        assert body["filename"] == "Lead_Data.csv"
        assert body["dry_run"] is False
        assert body["progress"] == {
            "records_done": 0,
            "bytes_done": 0,
            "size_bytes": SALESFORCE_LEADS.stat().st_size,
            "percent": 0.0,
        }
        assert body["counts"] == outcomes()
        assert body["id"] in stored.resumable(store), "the sweeper will take it"

        counts = run_queued(store, body["id"])

        assert counts == outcomes(created=11)
        status = client.get(location).json()
        assert status["status"] == "finished"
        assert status["counts"] == outcomes(created=11)
        assert status["progress"]["records_done"] == 11
        assert status["progress"]["percent"] == 100.0
        assert (status["encoding"], status["delimiter"]) == ("utf-8", ",")
        columns = [(c["header"], c["field"]) for c in status["columns"]]
        assert [header for header, _ in columns] == header_of(SALESFORCE_LEADS)
        assert ("MobilePhone", "phone") in columns
        assert ("Industry", "Industry") in columns
        assert status["started_at"] and status["finished_at"]
        leads = client.get(
            "/api/leads", params={"email": "fpatterfield0@engadget.com"}
        ).json()["data"]
        assert [lead["first_name"] for lead in leads] == ["Serena"]
        rejects = client.get(body["rejects_url"])
        rows = list(csv.reader(io.StringIO(rejects.content.decode("utf-8-sig"))))
        assert len(rows) == 1, "no rejects: the header alone"
        assert rows[0][5:] == header_of(SALESFORCE_LEADS)

    def test_a_dry_run_upload_counts_and_writes_no_lead(self, client, store):
        body = upload(client, SALESFORCE_LEADS, dry_run=True).json()
        assert body["dry_run"] is True

        run_queued(store, body["id"])

        status = client.get(body["status_url"]).json()
        assert status["counts"] == outcomes(created=11)
        assert count(store, Lead) == 0


class TestCsv02:
    def test_a_cp1252_upload_imports_and_reports_its_encoding(self, client, store):
        response = upload(client, FIXTURES / "CSV-02.csv")
        assert response.status_code == 202, response.text

        run_queued(store, response.json()["id"])

        status = client.get(response.json()["status_url"]).json()
        assert status["encoding"] == "cp1252"
        assert status["counts"] == outcomes(created=2)
        names = {
            lead["email"]: (lead["first_name"], lead["last_name"], lead["company"])
            for lead in client.get("/api/leads").json()["data"]
        }
        assert names == {
            "zoe.oneil@example.com": ("Zoë", "O’Neil", "Café Rémy (fake)"),
            "j.mueller@example.com": ("Jürgen", "Müller", "Bäckerei Süd (fake)"),
        }

    def test_the_upload_answer_reports_how_the_file_was_read(self, client):
        # The header was read (and checked) before the 202: what was found is
        # worth telling while the import waits for its run.
        response = upload(client, FIXTURES / "CSV-02.csv")

        body = response.json()
        assert body["encoding"] == "cp1252"
        assert body["delimiter"] == ","
        assert [column["header"] for column in body["columns"]] == header_of(
            FIXTURES / "CSV-02.csv"
        )


class TestRefusals:
    def test_an_unreadable_header_is_422_naming_the_file_and_keeps_nothing(
        self, client, store, live_api
    ):
        before = kept_uploads(live_api.settings.import_dir)

        response = upload(client, csv_bytes("email,,last_name", "a@example.com,x,y"))

        body = assert_problem(response, 422)
        assert [(e["field"], e["reason"]) for e in body["errors"]] == [
            ("file", "unreadable_file")
        ]
        assert "column 2" in body["detail"]
        assert kept_uploads(live_api.settings.import_dir) == before
        assert count(store, LeadImport) == 0

    @pytest.mark.parametrize(
        "mapping",
        [
            pytest.param("{not json", id="not JSON"),
            pytest.param('["email"]', id="not an object"),
            pytest.param('{"Mail": 5}', id="not text"),
        ],
    )
    def test_a_bad_mapping_is_422_naming_the_mapping(self, client, store, mapping):
        response = upload(client, SALESFORCE_LEADS, mapping=mapping)

        body = assert_problem(response, 422)
        assert [(e["field"], e["reason"]) for e in body["errors"]] == [
            ("mapping", "invalid_mapping")
        ]
        assert count(store, LeadImport) == 0

    def test_a_mapping_naming_a_missing_column_is_422(self, client, store):
        response = upload(
            client, SALESFORCE_LEADS, mapping=json.dumps({"Surname": "last_name"})
        )

        body = assert_problem(response, 422)
        assert "'Surname'" in body["detail"]
        assert count(store, LeadImport) == 0

    def test_a_file_over_the_import_limit_is_413_and_keeps_nothing(
        self, serve_api, store, tmp_path
    ):
        settings = Settings(
            data_dir=tmp_path,
            database_url=store.url,
            max_import_bytes=MIB,
            prefect_api_url="http://127.0.0.1:9/api",
        )
        server = serve_api(settings)
        row = b"someone.with.a.long.address@example.com,Someone,Long\r\n"
        content = b"email,first_name,last_name\r\n" + row * (MIB // len(row) + 1)
        assert MIB < len(content) < MIB + 1024

        with server.client() as http:
            response = upload(http, content)

        body = assert_problem(response, 413)
        assert "ORCH_MAX_IMPORT_BYTES" in body["detail"]
        assert kept_uploads(settings.import_dir) == []
        assert count(store, LeadImport) == 0

    def test_unknown_imports_are_404(self, client):
        unknown = uuid.uuid4()

        for path in (f"/api/imports/{unknown}", f"/api/imports/{unknown}/rejects.csv"):
            body = assert_problem(client.get(path), 404)
            assert str(unknown) in body["detail"]


class TestRejectsDownload:
    CONTENT = csv_bytes(
        "Email,First Name,Phone",
        "ada@example.com,Ada,",
        ",Zoë,",
        "N/A,Émile,12",
    )

    def test_is_csv_with_a_bom_reasons_then_the_cells(self, client, store):
        body = upload(client, self.CONTENT).json()
        run_queued(store, body["id"])

        response = client.get(body["rejects_url"])

        assert response.status_code == 200
        assert response.headers["content-type"] == "text/csv; charset=utf-8"
        assert response.headers["content-disposition"] == (
            f'attachment; filename="rejects-{body["id"]}.csv"'
        )
        assert response.content.startswith(b"\xef\xbb\xbf"), "Excel needs the BOM"
        rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
        assert rows[0] == [
            "record",
            "line",
            "field",
            "reason",
            "message",
            "Email",
            "First Name",
            "Phone",
        ]
        assert [row[:4] + row[5:] for row in rows[1:]] == [
            [
                "2",
                "3",
                "email, phone",
                "missing_contact",
                "",
                "Zoë",
                "",
            ],
            ["3", "4", "email; phone", "missing_contact; invalid_phone"]
            + ["N/A", "Émile", "12"],
        ]
        assert rows[1][4] == "an e-mail or a phone is needed"

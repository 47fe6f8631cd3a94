"""Bulk API 2.0 ingest jobs, as simple-salesforce's bulk2 helper runs them."""

from __future__ import annotations

import csv
import io
from typing import Any

from simple_salesforce import Salesforce

LEADS = [
    {"Web_Lead_Id__c": "w-101", "LastName": "Ørsted", "Company": "Café Zoë™ GmbH"},
    {"Web_Lead_Id__c": "w-102", "LastName": "山田", "Company": "Rocket 🚀 Labs"},
    {"Web_Lead_Id__c": "w-103", "LastName": "", "Company": "No Name"},
]


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


class TestIngest:
    def test_upserts_utf8_rows_and_reports_each(self, org: Any, sf: Salesforce) -> None:
        [job] = sf.bulk2.Lead.upsert(
            records=LEADS, external_id_field="Web_Lead_Id__c", wait=0
        )

        assert (job["numberRecordsProcessed"], job["numberRecordsFailed"]) == (3, 1)
        successful = rows(sf.bulk2.Lead.get_successful_records(job["job_id"]))
        failed = rows(sf.bulk2.Lead.get_failed_records(job["job_id"]))
        assert {row["LastName"] for row in successful} == {"Ørsted", "山田"}
        assert {row["sf__Created"] for row in successful} == {"true"}
        assert failed[0]["Web_Lead_Id__c"] == "w-103"
        assert failed[0]["sf__Error"].startswith("REQUIRED_FIELD_MISSING:")
        stored = {lead["Company"] for lead in org.state.salesforce.snapshot()}
        assert stored == {"Café Zoë™ GmbH", "Rocket 🚀 Labs"}

    def test_na_clears_a_field_and_an_empty_cell_leaves_it(
        self, org: Any, sf: Salesforce
    ) -> None:
        [lead_id] = org.seed(
            {"LastName": "L", "Company": "C", "Title": "CTO", "City": "Tartu"}
        )
        records = [{"Id": lead_id, "Title": "#N/A", "City": ""}]

        sf.bulk2.Lead.update(records=records, wait=0)

        lead = org.state.salesforce.leads[lead_id]
        assert (lead["Title"], lead["City"]) == (None, "Tartu")

    def test_a_body_that_is_not_utf8_fails_the_job(
        self, org: Any, sf: Salesforce
    ) -> None:
        headers = dict(sf.headers)
        base = f"{org.base_url}/services/data/v59.0/jobs/ingest"
        job = org.http.post(
            "/services/data/v59.0/jobs/ingest",
            json={"object": "Lead", "operation": "insert", "contentType": "CSV"},
            headers=headers,
        ).json()
        org.http.put(
            f"{base}/{job['id']}/batches",
            content="LastName,Company\nMüller,C\n".encode("latin-1"),
            headers=headers | {"Content-Type": "text/csv"},
        )
        org.http.patch(
            f"{base}/{job['id']}", json={"state": "UploadComplete"}, headers=headers
        )

        info = org.http.get(f"{base}/{job['id']}", headers=headers).json()

        assert info["state"] == "Failed"
        assert "UTF-8" in info["errorMessage"]
        assert org.state.salesforce.leads == {}

    def test_result_files_are_csv(self, org: Any, sf: Salesforce) -> None:
        [job] = sf.bulk2.Lead.insert(
            records=[{"LastName": "L", "Company": "C"}], wait=0
        )
        response = org.http.get(
            f"/services/data/v59.0/jobs/ingest/{job['job_id']}/successfulResults",
            headers=dict(sf.headers),
        )
        assert response.headers["content-type"] == "text/csv"
        header = response.text.splitlines()[0].split(",")
        assert header[:2] == ["sf__Id", "sf__Created"]
        assert set(header[2:]) == {"LastName", "Company"}

"""The lead domain: models, intake, the lead store and settings; no Prefect, no web."""

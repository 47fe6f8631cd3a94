"""The SOQL the connector sends, built with `simple_salesforce.format_soql` only.

Values are never pasted into a query: `format_soql` quotes them and escapes
`\\'`, `\\"` and `\\\\` with backslashes, as SOQL wants (a SQL-style doubled quote
is MALFORMED_QUERY, SF-02), and `{x:like}` also escapes `%` and `_`. Field
names are not values: they are checked to be plain API names first.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from simple_salesforce import format_soql

from connectors.crm.errors import CrmRequestError

API_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _field_list(fields: Sequence[str]) -> str:
    """`fields` as a SELECT list, each checked to be an API name, duplicates dropped."""
    chosen: list[str] = []
    for name in fields:
        if not API_NAME.match(name):
            raise CrmRequestError(
                f"{name!r} is not a Salesforce field API name; expected letters, "
                "digits and underscores, such as `Lead_Score__c`",
                code="invalid_field_name",
            )
        if name.lower() not in (seen.lower() for seen in chosen):
            chosen.append(name)
    return ", ".join(chosen)


def lead_ids_by_email(email: str) -> str:
    """The Leads with one e-mail address, oldest first (compared case-blind)."""
    return format_soql(
        "SELECT Id FROM Lead WHERE Email = {email} ORDER BY CreatedDate, Id",
        email=email,
    )


def leads_by_emails(emails: Sequence[str]) -> str:
    """Id and e-mail of the Leads with any of `emails`, oldest first."""
    return format_soql(
        "SELECT Id, Email FROM Lead WHERE Email IN {emails} ORDER BY CreatedDate, Id",
        emails=list(emails),
    )


# The Account lookups have no caller in the connector: they are the proof that
# company names, quotes and LIKE wildcards reach SOQL escaped (SF-02).
def account_ids_by_name(company: str) -> str:
    """The Accounts named exactly `company`."""
    return format_soql("SELECT Id FROM Account WHERE Name = {company}", company=company)


def account_ids_by_name_prefix(prefix: str) -> str:
    """The Accounts whose name starts with `prefix` (`%` and `_` taken literally)."""
    return format_soql(
        "SELECT Id FROM Account WHERE Name LIKE '{prefix:like}%'", prefix=prefix
    )


def leads_by_keys(key_field: str, keys: Sequence[str], fields: Sequence[str]) -> str:
    """The Leads whose `key_field` is one of `keys`, with `fields`."""
    selected = _field_list(["Id", key_field, "LastModifiedDate", *fields])
    return format_soql(
        "SELECT {selected:literal} FROM Lead WHERE {key:literal} IN {keys}",
        selected=selected,
        key=_field_list([key_field]),
        keys=list(keys),
    )


def leads_changed(
    start: datetime, end: datetime, key_field: str, fields: Sequence[str]
) -> str:
    """The Leads modified in `[start, end)`, in a stable order for paging."""
    for moment in (start, end):
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise CrmRequestError(
                f"changed() needs aware datetimes, got the naive {moment.isoformat()}",
                code="naive_datetime",
            )
    selected = _field_list(["Id", key_field, "LastModifiedDate", *fields])
    return format_soql(
        "SELECT {selected:literal} FROM Lead "
        "WHERE LastModifiedDate >= {start} AND LastModifiedDate < {end} "
        "ORDER BY LastModifiedDate, Id",
        selected=selected,
        start=start,
        end=end,
    )

"""The sandbox's Lead and Account fields: their describe entries and value checks."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

# Salesforce's SOAP type for each field type, as describe reports it.
SOAP_TYPES = {
    "id": "tns:ID",
    "string": "xsd:string",
    "textarea": "xsd:string",
    "email": "xsd:string",
    "phone": "xsd:string",
    "url": "xsd:string",
    "picklist": "xsd:string",
    "boolean": "xsd:boolean",
    "double": "xsd:double",
    "date": "xsd:date",
    "datetime": "xsd:dateTime",
}
TEXT_TYPES = {"id", "string", "textarea", "email", "phone", "url", "picklist"}

# Loose on purpose, like Salesforce: a local part, an @ and a dotted domain; an
# apostrophe or a plus in the local part is legal (SF-02, VAL-02).
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# Salesforce takes a datetime only with its zone: `Z` or an offset; a bare
# local time is refused rather than guessed.
DATETIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?(Z|[+-]\d{2}:?\d{2})$"
)


@dataclass(frozen=True)
class FieldDef:
    """One field of an sObject, with what describe says about it."""

    name: str
    label: str
    type: str
    length: int = 0
    nillable: bool = True
    createable: bool = True
    updateable: bool = True
    unique: bool = False
    external_id: bool = False
    picklist: tuple[str, ...] = ()
    restricted: bool = False
    # What Salesforce fills in on create when the field is not given.
    default: Any = None
    custom: bool = False

    @property
    def defaulted_on_create(self) -> bool:
        return self.default is not None

    @property
    def required(self) -> bool:
        return not self.nillable and self.createable and not self.defaulted_on_create

    def describe(self) -> dict[str, Any]:
        """This field as `sobjects/<type>/describe` lists it."""
        return {
            "aggregatable": self.type != "textarea",
            "aiPredictionField": False,
            "autoNumber": False,
            "byteLength": self.length * 3,
            "calculated": False,
            "caseSensitive": False,
            "createable": self.createable,
            "custom": self.custom,
            "defaultValue": self.default,
            "defaultedOnCreate": self.defaulted_on_create,
            "deprecatedAndHidden": False,
            "digits": 0,
            "externalId": self.external_id,
            "filterable": self.type != "textarea" or self.length <= 255,
            "groupable": self.type not in ("textarea", "double", "datetime"),
            "idLookup": self.type == "id" or self.external_id or self.type == "email",
            "label": self.label,
            "length": self.length,
            "name": self.name,
            "nameField": self.name == "Name",
            "nillable": self.nillable,
            "permissionable": self.nillable and not self.custom,
            "picklistValues": [
                {
                    "active": True,
                    "defaultValue": self.defaulted_on_create and index == 0,
                    "label": value,
                    "validFor": None,
                    "value": value,
                }
                for index, value in enumerate(self.picklist)
            ],
            "polymorphicForeignKey": False,
            "precision": 18 if self.type == "double" else 0,
            "queryByDistance": False,
            "restrictedPicklist": self.restricted,
            "scale": 2 if self.type == "double" else 0,
            "searchPrefilterable": False,
            "soapType": SOAP_TYPES[self.type],
            "sortable": self.type != "textarea" or self.length <= 255,
            "type": self.type,
            "unique": self.unique,
            "updateable": self.updateable,
        }


def _read_only(name: str, label: str, type_: str, default: Any = None) -> FieldDef:
    return FieldDef(
        name, label, type_, createable=False, updateable=False, default=default
    )


LEAD_SOURCES = (
    "Web",
    "Phone Inquiry",
    "Partner Referral",
    "Purchased List",
    "Webinar",
    "Other",
)
LEAD_STATUSES = (
    "Open - Not Contacted",
    "Working - Contacted",
    "Closed - Converted",
    "Closed - Not Converted",
)

LEAD_FIELDS: tuple[FieldDef, ...] = (
    FieldDef(
        "Id", "Lead ID", "id", 18, nillable=False, createable=False, updateable=False
    ),
    FieldDef("FirstName", "First Name", "string", 40),
    FieldDef("LastName", "Last Name", "string", 80, nillable=False),
    FieldDef("Company", "Company", "string", 255, nillable=False),
    FieldDef("Email", "Email", "email", 80),
    FieldDef("Phone", "Phone", "phone", 40),
    FieldDef("Title", "Title", "string", 128),
    FieldDef("Website", "Website", "url", 255),
    FieldDef("Street", "Street", "textarea", 255),
    FieldDef("City", "City", "string", 40),
    FieldDef("State", "State/Province", "string", 80),
    FieldDef("PostalCode", "Zip/Postal Code", "string", 20),
    FieldDef("Country", "Country", "string", 80),
    FieldDef(
        "LeadSource",
        "Lead Source",
        "picklist",
        255,
        picklist=LEAD_SOURCES,
        restricted=True,
    ),
    FieldDef(
        "Status",
        "Status",
        "picklist",
        255,
        nillable=False,
        picklist=LEAD_STATUSES,
        default=LEAD_STATUSES[0],
    ),
    FieldDef("Description", "Description", "textarea", 32000),
    FieldDef("Rating", "Rating", "picklist", 255, picklist=("Hot", "Warm", "Cold")),
    FieldDef(
        "HasOptedOutOfEmail",
        "Email Opt Out",
        "boolean",
        nillable=False,
        default=False,
    ),
    _read_only("IsConverted", "Converted", "boolean", False),
    _read_only("ConvertedDate", "Converted Date", "date"),
    _read_only("CreatedDate", "Created Date", "datetime"),
    _read_only("LastModifiedDate", "Last Modified Date", "datetime"),
    FieldDef(
        "Web_Lead_Id__c",
        "Web Lead Id",
        "string",
        64,
        unique=True,
        external_id=True,
        custom=True,
    ),
    FieldDef("Lead_Score__c", "Lead Score", "double", custom=True),
    FieldDef("Captured_Date__c", "Captured Date", "date", custom=True),
)

# Just enough Account for SF-02's lookups by company name.
ACCOUNT_FIELDS: tuple[FieldDef, ...] = (
    FieldDef(
        "Id", "Account ID", "id", 18, nillable=False, createable=False, updateable=False
    ),
    FieldDef("Name", "Account Name", "string", 255, nillable=False),
    _read_only("CreatedDate", "Created Date", "datetime"),
    _read_only("LastModifiedDate", "Last Modified Date", "datetime"),
)


@dataclass(frozen=True)
class SObjectType:
    """An sObject type: its name, id prefix and fields, looked up case-blind."""

    name: str
    key_prefix: str
    label: str
    fields: tuple[FieldDef, ...]

    def field(self, name: str) -> FieldDef | None:
        """The field called `name` in any letter case, as SOQL and REST accept it."""
        for field in self.fields:
            if field.name.lower() == name.lower():
                return field
        return None

    def describe(self, version: str) -> dict[str, Any]:
        """The `sobjects/<type>/describe` body."""
        base = f"/services/data/v{version}/sobjects/{self.name}"
        return {
            "actionOverrides": [],
            "activateable": False,
            "childRelationships": [],
            "compactLayoutable": True,
            "createable": True,
            "custom": False,
            "customSetting": False,
            "deepCloneable": False,
            "deletable": True,
            "deprecatedAndHidden": False,
            "feedEnabled": False,
            "fields": [field.describe() for field in self.fields],
            "hasSubtypes": False,
            "idEnabled": True,
            "isInterface": False,
            "isSubtype": False,
            "keyPrefix": self.key_prefix,
            "label": self.label,
            "labelPlural": f"{self.label}s",
            "layoutable": True,
            "mergeable": True,
            "mruEnabled": True,
            "name": self.name,
            "namedLayoutInfos": [],
            "queryable": True,
            "recordTypeInfos": [],
            "replicateable": True,
            "retrieveable": True,
            "searchable": True,
            "triggerable": True,
            "undeletable": True,
            "updateable": True,
            "urls": {
                "describe": f"{base}/describe",
                "sobject": base,
                "rowTemplate": f"{base}/{{ID}}",
            },
        }


LEAD = SObjectType("Lead", "00Q", "Lead", LEAD_FIELDS)
ACCOUNT = SObjectType("Account", "001", "Account", ACCOUNT_FIELDS)
SOBJECTS = {"lead": LEAD, "account": ACCOUNT}


@dataclass(frozen=True)
class FieldError:
    """One reason a record was refused, in Salesforce's terms."""

    code: str
    message: str
    fields: tuple[str, ...] = ()

    def as_rest(self) -> dict[str, Any]:
        """As a record endpoint's error array holds it (`errorCode`)."""
        return {
            "message": self.message,
            "errorCode": self.code,
            "fields": list(self.fields),
        }

    def as_collection(self) -> dict[str, Any]:
        """As sObject Collections and Bulk results hold it (`statusCode`)."""
        return {
            "statusCode": self.code,
            "message": self.message,
            "fields": list(self.fields),
        }


class RecordRefused(Exception):
    """A write was refused; carries Salesforce's error entries."""

    def __init__(self, *errors: FieldError, extra: dict[str, Any] | None = None):
        super().__init__(errors[0].message)
        self.errors = errors
        self.extra = extra or {}


def _coerce(field: FieldDef, value: Any) -> Any:
    """`value` as stored for `field`, or `RecordRefused` naming the field."""
    if value is None or (field.type in TEXT_TYPES and value == ""):
        # Salesforce stores an empty text value as null.
        return False if field.type == "boolean" else None
    if field.type == "boolean":
        if isinstance(value, bool):
            return value
        raise _json_error(field, value, "boolean")
    if field.type == "double":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise _json_error(field, value, "double")
    if not isinstance(value, str):
        raise _json_error(field, value, "String")
    if field.type == "date":
        if not DATE.match(value) or not _parses(date.fromisoformat, value):
            raise _json_error(field, value, "date")
        return value
    if field.type == "datetime":
        if not DATETIME.match(value) or not _parses(parse_datetime, value):
            raise _json_error(field, value, "datetime")
        return format_datetime(parse_datetime(value))
    if field.length and len(value) > field.length:
        raise RecordRefused(
            FieldError(
                "STRING_TOO_LONG",
                f"{field.label}: data value too large: {value[:40]}… "
                f"(max length={field.length})",
                (field.name,),
            )
        )
    if field.type == "email" and not EMAIL.match(value):
        raise RecordRefused(
            FieldError(
                "INVALID_EMAIL_ADDRESS",
                f"{field.label}: invalid email address: {value}",
                (field.name,),
            )
        )
    if field.restricted and value not in field.picklist:
        raise RecordRefused(
            FieldError(
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                f"{field.label}: bad value for restricted picklist field: {value}",
                (field.name,),
            )
        )
    return value


def _parses(parse: Any, value: str) -> bool:
    try:
        parse(value)
    except ValueError:
        return False
    return True


def _json_error(field: FieldDef, value: Any, kind: str) -> RecordRefused:
    return RecordRefused(
        FieldError(
            "JSON_PARSER_ERROR",
            f"Cannot deserialize instance of {kind} from value {value!r} "
            f"for field {field.name}",
            (field.name,),
        )
    )


def parse_datetime(value: str) -> datetime:
    """A Salesforce datetime string (`Z`, `+hh:mm` or `+hhmm`) as an aware datetime."""
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    elif re.search(r"[+-]\d{4}$", value):
        value = f"{value[:-2]}:{value[-2:]}"
    return datetime.fromisoformat(value)


def format_datetime(moment: datetime) -> str:
    """A datetime as Salesforce returns one: `2024-01-01T12:00:00.000+0000`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}+0000"
    )


def check_values(
    sobject: SObjectType, values: dict[str, Any], *, creating: bool
) -> dict[str, Any]:
    """`values` checked and converted for storage.

    Raises:
        RecordRefused: an unknown or read-only field, a value of the wrong
            type, too long or not allowed, or a required field missing.
    """
    converted: dict[str, Any] = {}
    for name, value in values.items():
        field = sobject.field(name)
        if field is None:
            raise RecordRefused(
                FieldError(
                    "INVALID_FIELD",
                    f"No such column '{name}' on sobject of type {sobject.name}",
                    (name,),
                )
            )
        writable = field.createable if creating else field.updateable
        if not writable:
            raise RecordRefused(
                FieldError(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    f"Unable to create/update fields: {field.name}. Please check "
                    "the security settings of this field and verify that it is "
                    "read/write for your profile or permission set.",
                    (field.name,),
                )
            )
        converted[field.name] = _coerce(field, value)
    missing = [
        field.name
        for field in sobject.fields
        if field.required
        and (
            (creating and converted.get(field.name) is None)
            or (field.name in converted and converted[field.name] is None)
        )
    ]
    if missing:
        raise RecordRefused(
            FieldError(
                "REQUIRED_FIELD_MISSING",
                f"Required fields are missing: [{', '.join(missing)}]",
                tuple(missing),
            )
        )
    return converted

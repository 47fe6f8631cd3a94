"""From a stored lead to CRM fields: the mapping files, their transforms and checks.

`load_mapping` reads `config/crm/<crm>.yaml`; `CrmMapping.apply` turns a lead
into fields; `apply_policies` drops those the CRM's current record keeps (and
flags a lead may only raise); `CrmMapping.unsubscribes` says how a HubSpot
account gets opt-outs; `check_mapping` compares a mapping with the fields the
CRM really has.
"""

from connectors.crm.mapping.check import MappingProblem, check_mapping
from connectors.crm.mapping.models import (
    CrmMapping,
    FieldRule,
    MappingFileError,
    OptOut,
    Policy,
    Transform,
    load_mapping,
    load_mapping_document,
)
from connectors.crm.mapping.policies import apply_policies
from connectors.crm.mapping.transforms import MappedLead

__all__ = [
    "CrmMapping",
    "FieldRule",
    "MappedLead",
    "MappingFileError",
    "MappingProblem",
    "OptOut",
    "Policy",
    "Transform",
    "apply_policies",
    "check_mapping",
    "load_mapping",
    "load_mapping_document",
]

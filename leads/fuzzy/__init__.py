"""Fuzzy matching of leads: is a new lead the same person as a stored one?

Rules (`config/matching.yaml`) say how each field is compared, what each
level of agreement weighs, and which blocking keys pick the candidates worth
comparing. Pure functions over plain values: no database, no Prefect.
"""

from leads.fuzzy.index import BlockIndex
from leads.fuzzy.profile import Profile
from leads.fuzzy.rules import MatchRules, RulesError, load_rules, parse_rules
from leads.fuzzy.verdict import Decision, Verdict

__all__ = [
    "BlockIndex",
    "Decision",
    "MatchRules",
    "Profile",
    "RulesError",
    "Verdict",
    "load_rules",
    "parse_rules",
]

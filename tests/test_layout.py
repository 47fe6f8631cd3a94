"""The design's import rule, read from the source: which package may import which."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGES = ("api", "connectors", "deployments", "flows", "leads", "tasks")
# What each package may import of ours (DESIGN.md, "Which way imports point").
ALLOWED = {
    "leads": {"leads"},
    "connectors": {"connectors", "leads"},
    "tasks": {"tasks", "connectors", "leads"},
    "flows": {"flows", "tasks", "connectors", "leads"},
    "api": {"api", "connectors", "leads"},
    "deployments": set(PACKAGES),
}


def imported_packages(path: Path) -> set[str]:
    """The top-level names a module imports (also inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_what_the_design_allows(package):
    wrong = {
        str(path.relative_to(ROOT)): sorted(
            (imported_packages(path) & set(PACKAGES)) - ALLOWED[package]
        )
        for path in modules(package)
    }

    assert {path: names for path, names in wrong.items() if names} == {}


def test_the_domain_and_the_sandbox_do_not_import_prefect():
    offenders = [
        str(path.relative_to(ROOT))
        for path in modules("leads") + modules("connectors")
        if "prefect" in imported_packages(path)
    ]

    assert offenders == []


def test_the_sandbox_imports_nothing_of_ours_but_itself():
    sandbox = ROOT / "connectors" / "sandbox"
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & set(PACKAGES))
        for path in sorted(sandbox.rglob("*.py"))
    }
    # `connectors` here is only ever connectors.sandbox itself.
    for path, names in offenders.items():
        text = (ROOT / path).read_text(encoding="utf-8")
        assert names in ([], ["connectors"]), path
        if names:
            assert "from connectors." in text
            assert all(
                line.split()[1].startswith("connectors.sandbox")
                for line in text.splitlines()
                if line.startswith(("from connectors", "import connectors"))
            ), path

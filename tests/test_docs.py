"""The documentation a user reads covers what the code offers: every hook, every built-in
measure, and nothing points to a document that is not in the repository."""
from __future__ import annotations

import re
from pathlib import Path

import fp
from fp import hookspecs

REPO = Path(__file__).parents[1]


def hook_names() -> list[str]:
    """Every function hookspecs marks with ``@hookspec`` (pluggy sets ``<project>_spec``)."""
    return [name for name, value in vars(hookspecs).items() if hasattr(value, "fp_spec")]


def test_every_hook_is_documented_in_contributing():
    names = hook_names()
    assert "score" in names and "fp_register_measures" in names
    text = (REPO / "CONTRIBUTING.md").read_text()
    missing = [n for n in names if not re.search(rf"`{n}\(", text)]
    assert not missing, f"hooks without a row in CONTRIBUTING.md's Hooks table: {missing}"


def test_every_built_in_measure_is_defined_in_docs():
    text = (REPO / "docs" / "measures.md").read_text()
    manager = fp.make_manager(autoload=False)
    registry = manager.registries["measures"]
    built_in = [n for n in registry.names() if registry.providers[n] == "measures"]
    assert len(built_in) >= 12
    missing = [n for n in built_in if not re.search(rf"^\| {n} \|", text, re.M)]
    assert not missing, f"measures without a definition row in docs/measures.md: {missing}"


def test_no_file_refers_to_documents_users_do_not_have():
    offenders = [str(p.relative_to(REPO)) for folder in ("framework", "plugins", "docs", "gin", "examples")
                 for p in (REPO / folder).rglob("*") if p.is_file() and p.suffix in {".py", ".md", ".gin"}
                 and "DESIGN.md" in p.read_text(errors="ignore")]
    offenders += [n for n in ("README.md", "CONTRIBUTING.md") if "DESIGN.md" in (REPO / n).read_text()]
    assert not offenders

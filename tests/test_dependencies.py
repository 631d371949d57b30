"""The declared dependencies: floors past the known advisories, installed versions that fit.

``KNOWN_VULNERABLE`` lists, for each dependency with a published advisory, releases it
affects (the last affected one at least). No requirement in ``pyproject.toml`` may admit
them. Add a line here when an advisory is published, then raise the floor.
"""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement  # pytest's own dependency
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"

KNOWN_VULNERABLE: dict[str, list[str]] = {
    # CVE-2023-29483 ("TuDoor": a forged reply ends the wait for the real one); 2.6.0's
    # fix was incomplete, 2.6.1 has it.
    "dnspython": ["2.5.0", "2.6.0"],
    # CVE-2025-69277: the bundled libsodium accepts points outside the main group in
    # crypto_core_ed25519_is_valid_point; 1.6.2 bundles a fixed libsodium.
    "pynacl": ["1.5.0", "1.6.1"],
    # CVE-2026-34444 (GHSA-69v7-xpr6-6gjm): attribute_filter bypassed through getattr and
    # setattr; 2.6 and earlier.
    "lupa": ["2.2", "2.6"],
    # CVE-2025-71176: predictable /tmp/pytest-of-USER directories; through 9.0.2.
    "pytest": ["8.4.2", "9.0.2"],
    # CVE-2024-6345 (before 70.0) and CVE-2025-47273 (before 78.1.1), package-index code.
    "setuptools": ["68.0.0", "69.5.1", "78.1.0"],
    # CVE-2022-40898 (ReDoS), before 0.38.1.
    "wheel": ["0.37.1"],
}

#: Runtime dependencies without an upper bound, and why (pyproject.toml says more).
UNCAPPED = {"trio": "0.x: a cap would hold back fixes; deprecations fail the tests first"}


def _pyproject() -> dict[str, object]:
    with PYPROJECT.open("rb") as f:
        return tomllib.load(f)


def _requirements() -> dict[str, list[Requirement]]:
    """Every requirement, by where it is declared."""
    data = _pyproject()
    project = data["project"]
    assert isinstance(project, dict)
    build = data["build-system"]
    assert isinstance(build, dict)
    found = {
        "dependencies": [Requirement(r) for r in project["dependencies"]],
        "build-system": [Requirement(r) for r in build["requires"]],
    }
    for extra, reqs in project["optional-dependencies"].items():
        found[extra] = [Requirement(r) for r in reqs]
    return found


def _all() -> list[tuple[str, Requirement]]:
    return [(where, r) for where, reqs in _requirements().items() for r in reqs]


@pytest.mark.parametrize(("where", "req"), _all(), ids=lambda v: str(v))
def test_no_requirement_admits_a_known_vulnerable_release(where: str, req: Requirement) -> None:
    for version in KNOWN_VULNERABLE.get(req.name.lower(), []):
        assert not req.specifier.contains(version, prereleases=True), (
            f"{where}: {req} admits {req.name} {version}, which has a known advisory"
        )


def test_every_dependency_with_an_advisory_is_declared_past_it() -> None:
    declared = {r.name.lower() for _, r in _all()}
    # wheel is not needed to build any more (setuptools >= 70.1 builds wheels itself).
    assert set(KNOWN_VULNERABLE) - {"wheel"} <= declared
    assert "wheel" not in declared


@pytest.mark.parametrize(
    ("where", "req"),
    [(w, r) for w, r in _all() if w != "build-system"],  # built in isolation, not installed
    ids=lambda v: str(v),
)
def test_installed_versions_satisfy_the_declared_ranges(where: str, req: Requirement) -> None:
    try:
        installed = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        if where == "dependencies":
            pytest.fail(f"{req.name} is a dependency and is not installed")
        pytest.skip(f"{req.name} ({where}) is not installed")
    assert req.specifier.contains(installed, prereleases=True), f"{req.name} {installed}: {req}"


def test_runtime_dependencies_stop_below_their_next_major_release() -> None:
    for req in _requirements()["dependencies"]:
        if req.name in UNCAPPED:
            continue
        caps = [Version(s.version) for s in req.specifier if s.operator == "<"]
        floors = [Version(s.version) for s in req.specifier if s.operator == ">="]
        assert caps and floors, f"{req}: a floor and a cap below the next major release"
        assert caps[0] == Version(f"{floors[0].major + 1}"), req

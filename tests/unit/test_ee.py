"""The execution environment: its definition agrees with the pins, and `make ee` builds a context
that holds the collection and what it needs. ansible-builder (pinned in requirements-ee.txt)
writes the context; no container is built."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
# Top-level import names of third-party packages, and the distributions that provide them
# (MarkupSafe always comes with Jinja2).
DISTRIBUTIONS = {
    "dns": "dnspython",
    "jinja2": "Jinja2",
    "markupsafe": "Jinja2",
    "netmiko": "netmiko",
    "paramiko": "paramiko",
    "yaml": "PyYAML",
}
NOT_THIRD_PARTY = {"ansible", "ansible_collections", "__future__"}


def pins(path: Path) -> dict[str, str]:
    """name (lower case) -> pinned version of a pip requirements file; -r lines are left out."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            name, _, version = line.partition("==")
            assert version, f"{path.name}: {line} is not pinned"
            found[name.strip().lower()] = version.strip()
    return found


def third_party_imports() -> set[str]:
    """Top-level names imported by the collection's plugins, standard library left out."""
    names = set()
    for path in (ROOT / "plugins").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - NOT_THIRD_PARTY


def test_collection_metadata_names_the_ee_requirement_files() -> None:
    meta = yaml.safe_load((ROOT / "meta" / "execution-environment.yml").read_text())
    definition = yaml.safe_load((ROOT / "execution-environment.yml").read_text())

    assert meta == {
        "version": 1,
        "dependencies": {"python": "ee/requirements.txt", "system": "ee/bindep.txt"},
    }
    assert definition["version"] == 3
    assert definition["dependencies"]["python"] == meta["dependencies"]["python"]
    assert definition["dependencies"]["system"] == meta["dependencies"]["system"]


def test_every_third_party_import_of_the_plugins_is_an_ee_requirement() -> None:
    required = pins(ROOT / "ee" / "requirements.txt")
    imported = third_party_imports()

    assert imported <= set(DISTRIBUTIONS), f"map these imports to a distribution: {imported}"
    assert {DISTRIBUTIONS[name].lower() for name in imported} <= set(required)


def test_ee_pins_agree_with_requirements_txt() -> None:
    project = pins(ROOT / "requirements.txt")
    ee = pins(ROOT / "ee" / "requirements.txt")
    definition = yaml.safe_load((ROOT / "execution-environment.yml").read_text())
    core = definition["dependencies"]["ansible_core"]["package_pip"]

    assert {name: project.get(name) for name in ee} == ee
    assert core == f"ansible-core=={project['ansible-core']}"


def test_bindep_lists_ssh_and_nftables_for_both_package_families() -> None:
    lines = [
        line.split("#")[0].strip() for line in (ROOT / "ee" / "bindep.txt").read_text().splitlines()
    ]
    entries = {line.split()[0]: line for line in lines if line}

    assert (
        "platform:dpkg" in entries["openssh-client"]
        and "platform:rpm" in entries["openssh-clients"]
    )
    assert "platform:dpkg" in entries["nftables"] and "platform:rpm" in entries["nftables"]


def test_ansible_builder_reads_the_collection_dependencies() -> None:
    """ansible-builder's own introspection of the linked collection finds our files."""
    builder = BIN / "ansible-builder"
    if not builder.exists():
        subprocess.run(
            [str(BIN / "pip"), "install", "--quiet", "-r", str(ROOT / "requirements-ee.txt")],
            check=True,
            timeout=600,
        )
    found = subprocess.run(
        [str(builder), "introspect", str(ROOT / ".collections")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    data = yaml.safe_load(found.stdout)
    python = {re.split(r"[=\s]", line)[0].lower() for line in data["python"]}
    system = {line.split()[0] for line in data["system"]}

    assert {"dnspython", "netmiko", "paramiko"} <= python
    assert {"openssh-client", "openssh-clients", "nftables"} <= system
    assert all(line.endswith("# from collection campusnet.smtpguard") for line in data["python"])


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    context = tmp_path_factory.mktemp("ee") / "context"
    made = subprocess.run(
        ["make", "--no-print-directory", "ee", f"EE_CONTEXT={context}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    return context


def test_make_ee_context_holds_the_requirements_and_the_collection(context: Path) -> None:
    build = context / "_build"
    containerfile = (context / "Containerfile").read_text()
    galaxy = yaml.safe_load((build / "requirements.yml").read_text())

    assert pins(build / "requirements.txt") == pins(ROOT / "ee" / "requirements.txt")
    assert (build / "bindep.txt").read_text() == (ROOT / "ee" / "bindep.txt").read_text()
    assert galaxy["collections"] == [
        {"name": "collections/campusnet-smtpguard.tar.gz", "type": "file"}
    ]
    assert "ansible-core==2.19.14" in containerfile and "FROM $EE_BASE_IMAGE" in containerfile
    assert "ansible-galaxy collection install" in containerfile

    with tarfile.open(build / "collections" / "campusnet-smtpguard.tar.gz") as archive:
        members = set(archive.getnames())
        manifest = json.load(archive.extractfile("MANIFEST.json"))  # type: ignore[arg-type]
    assert (manifest["collection_info"]["namespace"], manifest["collection_info"]["name"]) == (
        "campusnet",
        "smtpguard",
    )
    assert {
        "meta/execution-environment.yml",
        "ee/requirements.txt",
        "ee/bindep.txt",
        "plugins/modules/flood_analyze.py",
        "roles/schedule/tasks/main.yml",
    } <= members

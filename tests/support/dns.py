"""A real DNS server on 127.0.0.1 for tests: tools/minidns.py, started in-process.

    from support.dns import dns_server_fixture
    dns_server = dns_server_fixture(RECORDS)      # RECORDS in the minidns zone format

    def test_something(dns_server):
        dns_server.drop("slow.example")           # hooks last for this test only
        ... nameservers=["127.0.0.1"], port=dns_server.port ...

Each test gets its own server on a free port; it always stops, whatever the test does.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


def _load_minidns() -> ModuleType:
    """tools/ is not a package; load tools/minidns.py once under a private name."""
    name = "smtpguard_tools_minidns"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / "minidns.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


minidns = _load_minidns()
DNSServer = minidns.DNSServer
Zone = minidns.Zone
MINIDNS_SCRIPT = ROOT / "tools" / "minidns.py"


@contextmanager
def running_dns(records: str) -> Iterator[Any]:
    """A started DNSServer serving `records` on 127.0.0.1 and a free port; stopped on exit."""
    server = DNSServer(Zone.from_text(records, source="test records"), host=HOST, port=0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def dns_server_fixture(records: str) -> Callable[..., Any]:
    """A pytest fixture (assign it to a module-level name) yielding a running server."""

    @pytest.fixture
    def dns_server() -> Iterator[Any]:
        with running_dns(records) as server:
            yield server

    return dns_server

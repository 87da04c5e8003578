"""Lab tests need root (namespaces, daemons) and the Debian packages .ci/run installs."""

from __future__ import annotations

import os
import shutil

import pytest


def pytest_collection_modifyitems(config, items):
    missing = [tool for tool in ("ip", "postfix", "dnsmasq") if shutil.which(tool) is None]
    reason = None
    if os.geteuid() != 0:
        reason = "lab tests need root (network namespaces, daemons); CI runs them as root"
    elif missing:
        reason = f"lab tests need {', '.join(missing)}; .ci/run installs them"
    if reason:
        for item in items:
            item.add_marker(pytest.mark.skip(reason=reason))

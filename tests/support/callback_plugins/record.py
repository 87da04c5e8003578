"""Test-only callback: records every task result and the recap as JSON for assertions.

Enabled by tests with ANSIBLE_CALLBACK_PLUGINS pointing here, ANSIBLE_CALLBACKS_ENABLED=record
and SMTPGUARD_RECORD=<file>; the normal output is untouched.
"""

from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: record
type: aggregate
short_description: Record task results as JSON for the test suite
description: Writes every task result and the recap to the file named by SMTPGUARD_RECORD.
requirements: [enabled in ansible.cfg or ANSIBLE_CALLBACKS_ENABLED]
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "record"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self.tasks: list[dict] = []

    def _record(self, result, status: str) -> None:
        self.tasks.append({
            "task": result.task_name,
            "host": result._host.get_name(),
            "status": status,
            "result": json.loads(json.dumps(result._result, default=str)),
        })

    def v2_runner_on_ok(self, result, **kwargs) -> None:
        self._record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False) -> None:
        self._record(result, "failed")

    def v2_runner_on_skipped(self, result) -> None:
        self._record(result, "skipped")

    def v2_playbook_on_stats(self, stats) -> None:
        hosts = sorted(stats.processed.keys())
        recap = {host: stats.summarize(host) for host in hosts}
        with open(os.environ["SMTPGUARD_RECORD"], "w", encoding="utf-8") as handle:
            json.dump({"tasks": self.tasks, "stats": recap}, handle)

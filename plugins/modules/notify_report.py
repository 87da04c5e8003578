#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: notify_report
short_description: Write the evidence report of a mitigation cycle (JSON and HTML)
description:
  - Writes what one cycle measured, decided and pushed to O(directory) as
    C(cycle-<UTC time>-<random>.json) and a self-contained C(.html) page of the same name
    (inline SVG chart and style, nothing fetched).
  - The report holds the occupancy over the window per gateway and per named mail server
    (when the analysis reports C(servers)) as a chart with the trigger and alert lines; the
    decision; every candidate with its rule, counts, longest session, risk, PTR name, forward
    check, verdict and reason; what each device took, with its delta and the rendered file's
    diff when the run had C(--diff); the timings of the analysis and of the sparing step;
    the failures.
  - Then removes reports older than O(keep_days) or beyond the O(keep_files) newest runs.
  - Every string in the page is HTML-escaped; names come from logs and DNS.
version_added: 0.2.0
author:
  - campusnet network operations
options:
  gateways:
    description: The C(flood_analyze) result of each gateway, by inventory name.
    type: dict
    required: true
  spare:
    description: The C(spare_candidates) result.
    type: dict
    default: {}
  plan:
    description: The C(blocklist_state) plan result.
    type: dict
    default: {}
  snapshot:
    description: The snapshot the commit recorded; default the plan's next snapshot.
    type: int
  devices:
    description:
      - Each enforcing device by inventory name, with C(platform), C(dest), C(pushed), C(fit)
        (the C(blocklist_fit) result), C(result) (a C(device_blocklist) result) and
        C(written) (the rendered file's template result).
    type: dict
    default: {}
  trigger_occupancy:
    description: Trigger level in percent, drawn on the chart.
    type: float
    default: 20
  alert_occupancy:
    description: Alert level in percent, drawn on the chart.
    type: float
    default: 40
  trigger_levels:
    description:
      - Each gateway's own trigger level in percent, by inventory name; a gateway not named
        here has O(trigger_occupancy).
    type: dict
    default: {}
  alert_levels:
    description:
      - Each gateway's own alert level in percent, by inventory name, drawn and named per
        gateway; a gateway not named here has O(alert_occupancy).
    type: dict
    default: {}
  run_kind:
    description: How the cycle was started (V(scheduled), V(emergency)).
    type: str
    default: scheduled
  failures:
    description: Failures to record, one sentence each.
    type: list
    elements: str
    default: []
  directory:
    description: Directory of the reports (created, mode 0750).
    type: path
    required: true
  keep_days:
    description:
      - Remove reports older than this many days; V(0) keeps them whatever their age.
      - At most 36500 (a hundred years).
    type: float
    default: 90
  keep_files:
    description: Keep at most this many runs' reports (up to 10000000); V(0) sets no limit.
    type: int
    default: 5000
  now:
    description: ISO 8601 time the report is written at, instead of the clock (tests).
    type: str
attributes:
  check_mode:
    support: full
    description: In check mode nothing is written or removed; the report is returned.
  diff_mode:
    support: none
notes:
  - The report is evidence of a run, like the analysis's per-source report; writing it is
    not reported as a change, so a rerun that changes nothing else stays C(changed=false).
  - Without a time series in the analysis result (C(occupancy.series)), the chart shows what
    every analysis reports - the mean over the covered window, the peak at its time and the
    value at the check - not the curve between them.
"""

EXAMPLES = r"""
- name: Write the evidence report
  campusnet.smtpguard.notify_report:
    gateways: {gw1: "{{ hostvars['gw1'].analyze_result }}"}
    spare: "{{ spare_result }}"
    plan: "{{ decide_plan }}"
    directory: /var/lib/smtpguard/reports/cycles
    keep_days: 400
"""

RETURN = r"""
json:
  description: Path of the JSON report (none in check mode).
  returned: always
  type: str
html:
  description: Path of the HTML report (none in check mode).
  returned: always
  type: str
pruned:
  description: Report files removed by the retention.
  returned: always
  type: list
  elements: str
summary:
  description: Counts of the report - candidates, blocked, spared, devices.
  returned: always
  type: dict
"""

import datetime as dt

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.campusnet.smtpguard.plugins.module_utils._report import (
    ReportError,
    build_report,
    prune,
    write_report,
)

MAX_KEEP_DAYS = 36500
MAX_KEEP_FILES = 10_000_000

ARGUMENT_SPEC = dict(
    gateways=dict(type="dict", required=True),
    spare=dict(type="dict", default={}),
    plan=dict(type="dict", default={}),
    snapshot=dict(type="int"),
    devices=dict(type="dict", default={}),
    trigger_occupancy=dict(type="float", default=20.0),
    alert_occupancy=dict(type="float", default=40.0),
    trigger_levels=dict(type="dict", default={}),
    alert_levels=dict(type="dict", default={}),
    run_kind=dict(type="str", default="scheduled"),
    failures=dict(type="list", elements="str", default=[]),
    directory=dict(type="path", required=True),
    keep_days=dict(type="float", default=90.0),
    keep_files=dict(type="int", default=5000),
    now=dict(type="str"),
)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    for name, highest in (("keep_days", MAX_KEEP_DAYS), ("keep_files", MAX_KEEP_FILES)):
        if not 0 <= params[name] <= highest:
            module.fail_json(
                msg=f"{name} (notify_report_{name}) is {params[name]:g}; give 0 (no limit) "
                f"up to {highest}"
            )
    levels: dict[str, dict[str, float]] = {}
    for kind in ("trigger", "alert"):
        for name, value in params[f"{kind}_levels"].items():
            try:
                levels.setdefault(str(name), {})[kind] = float(value)
            except (TypeError, ValueError):
                module.fail_json(msg=f"{kind}_levels: {name}'s level {value!r} is not a number")
    written_at = dt.datetime.now(dt.UTC)
    if params["now"]:
        try:
            written_at = dt.datetime.fromisoformat(params["now"].replace("Z", "+00:00"))
        except ValueError:
            module.fail_json(msg=f"now: {params['now']!r} is not an ISO 8601 time")

    report = build_report(
        gateways=params["gateways"], spare=params["spare"], plan=params["plan"],
        devices=params["devices"], trigger_occupancy=params["trigger_occupancy"],
        alert_occupancy=params["alert_occupancy"], levels=levels, written_at=written_at,
        run_kind=params["run_kind"], snapshot=params["snapshot"], failures=params["failures"],
    )  # fmt: skip
    summary = {
        "candidates": len(report["candidates"]),
        "blocked": sum(1 for row in report["candidates"] if row["verdict"].startswith("blocked")),
        "spared": sum(1 for row in report["candidates"] if row["verdict"] == "spared"),
        "devices": len(report["devices"]),
    }
    if module.check_mode:
        module.exit_json(changed=False, json=None, html=None, pruned=[], summary=summary)

    try:
        paths = write_report(report, directory=params["directory"], written_at=written_at)
        pruned = prune(params["directory"], keep_days=params["keep_days"],
                       keep_files=params["keep_files"], now=written_at)  # fmt: skip
    except ReportError as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg=f"cannot apply the retention in {params['directory']!r}: {exc}")
    module.exit_json(changed=False, pruned=pruned, summary=summary, **paths)


if __name__ == "__main__":
    main()

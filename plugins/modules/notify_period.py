#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: notify_period
short_description: Summarise the stored cycle reports per day or per month
description:
  - Reads the cycle reports that M(campusnet.smtpguard.notify_report) stored in
    O(directory) and counts, per day or per month, the checks, the checks whose occupancy
    was above O(above) percent, and the distinct sources blocked (the two series of the
    source paper's figure 4).
  - Writes the summary as JSON to O(dest_json) and as a self-contained HTML page with an
    SVG chart and a table to O(dest_html).
  - A check is one gateway at one check time; a rerun on the same logs counts once. Periods
    without a report between the first and the last appear with zero counts.
version_added: 0.2.0
author:
  - campusnet network operations
options:
  directory:
    description: Directory of the cycle reports.
    type: path
    required: true
  by:
    description: Count per V(day) or per V(month).
    type: str
    default: month
    choices: [day, month]
  timezone:
    description: IANA time zone whose days and months count.
    type: str
    default: UTC
  above:
    description: Occupancy in percent that a check must exceed to count as above.
    type: float
    default: 40
  dest_json:
    description: Where to write the JSON summary.
    type: path
  dest_html:
    description: Where to write the HTML page.
    type: path
attributes:
  check_mode:
    support: full
    description: In check mode nothing is written; the summary is returned.
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Summarise the year per month
  campusnet.smtpguard.notify_period:
    directory: /var/lib/smtpguard/reports/cycles
    by: month
    timezone: Asia/Tokyo
    dest_html: /var/www/smtpguard/months.html
"""

RETURN = r"""
periods:
  description: One row per period - C(period), C(checks), C(above), C(peak), C(blocked).
  returned: always
  type: list
  elements: dict
totals:
  description: C(checks), C(above) and C(blocked) (distinct sources) over all periods.
  returned: always
  type: dict
reports:
  description: Number of reports read.
  returned: always
  type: int
"""

import json

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.campusnet.smtpguard.plugins.module_utils._report import (
    ReportError,
    load_reports,
    period_summary,
    render_period_html,
    write_text,
)

ARGUMENT_SPEC = dict(
    directory=dict(type="path", required=True),
    by=dict(type="str", default="month", choices=["day", "month"]),
    timezone=dict(type="str", default="UTC"),
    above=dict(type="float", default=40.0),
    dest_json=dict(type="path"),
    dest_html=dict(type="path"),
)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    try:
        reports, unreadable = load_reports(params["directory"])
        summary = period_summary(
            reports, by=params["by"], timezone=params["timezone"], above=params["above"]
        )
    except ReportError as exc:
        module.fail_json(msg=str(exc))
    for line in unreadable:
        module.warn(f"left out the report {line}")
    summary["reports"] = len(reports)

    changed = False
    outputs = (
        (params["dest_json"], lambda: json.dumps(summary, indent=1, sort_keys=True) + "\n"),
        (params["dest_html"], lambda: render_period_html(summary)),
    )
    for path, render in outputs:
        if path and not module.check_mode:
            try:
                changed = write_text(path, render()) or changed
            except ReportError as exc:
                module.fail_json(msg=str(exc))
    module.exit_json(changed=changed, **summary)


if __name__ == "__main__":
    main()

#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: notify_cycle
short_description: Tell people what a mitigation cycle measured, blocked and spared
description:
  - Builds one notification from the results a cycle registered and delivers it by e-mail
    (an SMTP relay), a webhook (JSON that Slack and Microsoft Teams incoming webhooks accept)
    and syslog.
  - When any gateway's occupancy is above its alert level (the C(alert) that
    M(campusnet.smtpguard.flood_analyze) returns) the notification is an B(alert), sent every
    cycle. Otherwise it is a B(summary), sent at most once per O(summary_interval); the time
    of the last summary is kept in O(state_path).
  - The message holds the occupancy now and at its peak per gateway (and per named mail
    server when the analysis reports C(servers)), whether the cycle triggered, how many
    sources were blocked, spared and expired, the top sources with their rule and numbers,
    and what failed.
  - A channel that fails is reported as a warning and in RV(failed); the module itself does
    not fail for it, so that a lost notification never fails a cycle that already pushed.
version_added: 0.2.0
author:
  - campusnet network operations
options:
  gateways:
    description: The C(flood_analyze) result of each gateway, by inventory name.
    type: dict
    required: true
  spare:
    description: The C(spare_candidates) result (C(block), C(spared), C(stats)).
    type: dict
    default: {}
  plan:
    description:
      - The C(blocklist_state) plan (C(added), C(removed), C(renewed), C(capped), C(blocklist)).
    type: dict
    default: {}
  devices:
    description:
      - Each enforcing device by inventory name, with C(pushed) (false when it did not take
        the block list) and C(warning) (for example a capacity warning).
    type: dict
    default: {}
  failures:
    description: Further failures to report, one sentence each.
    type: list
    elements: str
    default: []
  alert_occupancy:
    description: The alert level in percent, for the text; the decision is each gateway's C(alert).
    type: float
    default: 40
  alert_levels:
    description:
      - Each gateway's own alert level in percent, by inventory name, for the subject and the
        text; a gateway not named here has O(alert_occupancy).
    type: dict
    default: {}
  run_kind:
    description: How the cycle was started, named in the subject when not V(scheduled).
    type: str
    default: scheduled
  report:
    description: Where the evidence report of this run is, named in the message.
    type: str
  top:
    description: How many sources the message lists, most qualifying sessions first.
    type: int
    default: 10
  summaries:
    description: Send summaries at all; V(false) sends only alerts.
    type: bool
    default: true
  summary_interval:
    description:
      - Least time between two summaries; seconds or a number with s, m, h or d.
      - V(0) sends one every cycle.
      - A value that cannot be read is warned about and V(1h) is used, so the notification
        still goes out.
    type: raw
    default: 1h
  state_path:
    description:
      - JSON file that remembers when the last summary went out (mode 0600). Without it every
        summary is due.
    type: path
  now:
    description: ISO 8601 time used for the rate limit instead of the clock (replays and tests).
    type: str
  mail:
    description: Send by e-mail through this relay; omit to not send e-mail.
    type: dict
    suboptions:
      host: {description: The SMTP relay., type: str, required: true}
      port: {description: Its port; 465 with V(tls)., type: int, default: 25}
      security:
        description:
          - V(starttls) (refused when the relay does not offer it), V(tls) (implicit TLS) or
            V(none).
        type: str
        default: starttls
        choices: [starttls, tls, none]
      username: {description: Log in with this name (needs TLS)., type: str}
      password: {description: Password for O(mail.username)., type: str}
      sender: {description: From address., type: str, default: smtpguard@localhost}
      recipients: {description: To addresses., type: list, elements: str, required: true}
      timeout: {description: Seconds to wait for the relay., type: float, default: 10}
      validate_certs: {description: Check the relay's certificate., type: bool, default: true}
      ca_path: {description: CA bundle for the relay's certificate., type: path}
  webhook:
    description: Post a JSON body to this incoming webhook; omit to not post.
    type: dict
    suboptions:
      url:
        description:
          - The webhook URL; it carries a token, so it is never shown (only scheme and host).
        type: str
        required: true
      format:
        description:
          - V(card) - C(text) for Slack, MessageCard C(title), C(text), C(themeColor) for a Teams
            connector, and the facts under C(smtpguard).
          - V(adaptive) - an Adaptive Card message for Teams Workflows webhooks.
        type: str
        default: card
        choices: [card, adaptive]
      timeout: {description: Seconds to wait for the answer., type: float, default: 10}
      validate_certs: {description: Check the server's certificate., type: bool, default: true}
      ca_path: {description: CA bundle for the server's certificate., type: path}
  syslog:
    description: Write one line to syslog; omit to not.
    type: dict
    suboptions:
      address:
        description: A local socket path (V(/dev/log)) or a host name or address.
        type: str
        default: /dev/log
      port: {description: Port for a host., type: int, default: 514}
      protocol: {description: Transport to a host., type: str, default: udp, choices: [udp, tcp]}
      facility: {description: Syslog facility., type: str, default: daemon}
      tag: {description: Program name in the line., type: str, default: smtpguard}
      alert_priority: {description: Priority of alerts., type: str, default: warning}
      summary_priority: {description: Priority of summaries., type: str, default: info}
attributes:
  check_mode:
    support: full
    description:
      - In check mode the message is built and returned but not sent; the state is not written.
  diff_mode:
    support: none
notes:
  - Sending is not a change to what Ansible manages; the module reports C(changed=false) and
    lists what it delivered in RV(sent).
  - The SMTP password and the webhook URL are C(no_log); error messages name the relay by
    host and port and the webhook by scheme and host only.
  - The C(card) body is accepted by Slack incoming webhooks and by Office 365 connectors;
    Teams Workflows webhooks need V(adaptive).
"""

EXAMPLES = r"""
- name: Notify the mail team
  campusnet.smtpguard.notify_cycle:
    gateways: {gw1.mgmt.campus.example: "{{ hostvars['gw1.mgmt.campus.example'].analyze_result }}"}
    spare: "{{ spare_result }}"
    plan: "{{ decide_plan }}"
    state_path: /var/lib/smtpguard/state/notify.json
    mail:
      host: relay.campus.example
      port: 587
      username: smtpguard
      password: "{{ vault_relay_password }}"
      sender: smtpguard@campus.example
      recipients: [mail-team@campus.example]
    syslog: {address: loghost.campus.example}
"""

RETURN = r"""
kind:
  description: V(alert) or V(summary).
  returned: always
  type: str
due:
  description: Whether the notification was to go out (alerts always; summaries by the interval).
  returned: always
  type: bool
sent:
  description: Channels that delivered it (none in check mode).
  returned: always
  type: list
  elements: str
errors:
  description: Channels that failed, with the reason.
  returned: always
  type: dict
would_send:
  description: Channels that would have been used (check mode) or were tried.
  returned: always
  type: list
  elements: str
subject:
  description: The subject line.
  returned: always
  type: str
text:
  description: The message body.
  returned: always
  type: str
facts:
  description: The figures of the message.
  returned: always
  type: dict
"""

import datetime as dt
import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.campusnet.smtpguard.plugins.module_utils._notify import (
    ALERT,
    MailSettings,
    NotifyError,
    SyslogSettings,
    compose,
    cycle_facts,
    post_webhook,
    read_state,
    send_mail,
    send_syslog,
    summary_due,
    webhook_body,
    write_state,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._timestamps import (
    TimestampError,
    parse_duration,
)

MAIL_SPEC = dict(
    host=dict(type="str", required=True),
    port=dict(type="int", default=25),
    security=dict(type="str", default="starttls", choices=["starttls", "tls", "none"]),
    username=dict(type="str"),
    password=dict(type="str", no_log=True),
    sender=dict(type="str", default="smtpguard@localhost"),
    recipients=dict(type="list", elements="str", required=True),
    timeout=dict(type="float", default=10.0),
    validate_certs=dict(type="bool", default=True),
    ca_path=dict(type="path"),
)
WEBHOOK_SPEC = dict(
    url=dict(type="str", required=True, no_log=True),
    format=dict(type="str", default="card", choices=["card", "adaptive"]),
    timeout=dict(type="float", default=10.0),
    validate_certs=dict(type="bool", default=True),
    ca_path=dict(type="path"),
)
SYSLOG_SPEC = dict(
    address=dict(type="str", default="/dev/log"),
    port=dict(type="int", default=514),
    protocol=dict(type="str", default="udp", choices=["udp", "tcp"]),
    facility=dict(type="str", default="daemon"),
    tag=dict(type="str", default="smtpguard"),
    alert_priority=dict(type="str", default="warning"),
    summary_priority=dict(type="str", default="info"),
)
ARGUMENT_SPEC = dict(
    gateways=dict(type="dict", required=True),
    spare=dict(type="dict", default={}),
    plan=dict(type="dict", default={}),
    devices=dict(type="dict", default={}),
    failures=dict(type="list", elements="str", default=[]),
    alert_occupancy=dict(type="float", default=40.0),
    alert_levels=dict(type="dict", default={}),
    run_kind=dict(type="str", default="scheduled"),
    report=dict(type="str"),
    top=dict(type="int", default=10),
    summaries=dict(type="bool", default=True),
    summary_interval=dict(type="raw", default="1h"),
    state_path=dict(type="path"),
    now=dict(type="str"),
    mail=dict(type="dict", options=MAIL_SPEC),
    webhook=dict(type="dict", options=WEBHOOK_SPEC),
    syslog=dict(type="dict", options=SYSLOG_SPEC),
)


DEFAULT_INTERVAL = 3600.0


def _now(module: AnsibleModule) -> dt.datetime:
    text = module.params["now"]
    if not text:
        return dt.datetime.now(dt.UTC)
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        module.fail_json(msg=f"now: {text!r} is not an ISO 8601 time such as 2026-12-03T16:30:00Z")
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _deliver(module: AnsibleModule, message, channels: list[str]) -> tuple[list[str], dict]:
    """Try every channel; a failure becomes a warning and an entry in `failed`."""
    params = module.params
    sent, failed = [], {}
    for channel in channels:
        try:
            if channel == "mail":
                mail = params["mail"]
                send_mail(message, MailSettings(
                    host=mail["host"], port=mail["port"], security=mail["security"],
                    username=mail["username"], password=mail["password"], sender=mail["sender"],
                    recipients=mail["recipients"], timeout=mail["timeout"],
                    validate_certs=mail["validate_certs"], ca_path=mail["ca_path"],
                ))  # fmt: skip
            elif channel == "webhook":
                hook = params["webhook"]
                post_webhook(webhook_body(message, style=hook["format"]), url=hook["url"],
                             timeout=hook["timeout"], validate_certs=hook["validate_certs"],
                             ca_path=hook["ca_path"])  # fmt: skip
            else:
                send_syslog(message, SyslogSettings(**params["syslog"]))
            sent.append(channel)
        except (NotifyError, OSError, ValueError) as exc:
            reason = str(exc) or type(exc).__name__
            failed[channel] = reason
            module.warn(
                f"notification by {channel} failed: {reason}; the cycle goes on, fix the "
                f"{channel} settings (notify_{channel}) for the next one"
            )
    return sent, failed


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    try:
        interval = parse_duration(params["summary_interval"], name="notify_summary_interval")
    except TimestampError as exc:
        # A bad setting must not cost the notification: warn and use the default.
        interval = DEFAULT_INTERVAL
        module.warn(f"{exc}; one summary per hour is sent until it is fixed")
    try:
        levels = {name: float(level) for name, level in params["alert_levels"].items()}
    except (TypeError, ValueError):
        levels = {}
        module.warn("alert_levels: each gateway's level must be a number; using alert_occupancy")
    now = _now(module)

    facts = cycle_facts(
        gateways=params["gateways"], spare=params["spare"], plan=params["plan"],
        devices=params["devices"], failures=params["failures"],
        alert_occupancy=params["alert_occupancy"], alert_levels=levels, run_kind=params["run_kind"],
        check_mode=module.check_mode, top=params["top"], report=params["report"],
    )  # fmt: skip
    message = compose(facts)
    state = read_state(params["state_path"]) if params["state_path"] else {}
    due = facts.kind == ALERT or (
        params["summaries"] and summary_due(state, now=now, interval=interval)
    )
    channels = [name for name in ("mail", "webhook", "syslog") if params[name]] if due else []

    sent, failed = [], {}
    if channels and not module.check_mode:
        try:
            sent, failed = _deliver(module, message, channels)
        except Exception:  # noqa: BLE001 - a notification never fails the cycle
            module.warn("notification failed unexpectedly; the cycle goes on")
            failed = {"unexpected": traceback.format_exc(limit=3)}
        if sent and params["state_path"]:
            stamp = now.isoformat(timespec="seconds")
            try:
                write_state(params["state_path"], {
                    **state, f"last_{facts.kind}": stamp, "last_sent": stamp,
                })  # fmt: skip
            except OSError as exc:
                module.warn(f"cannot remember the notification in {params['state_path']}: "
                            f"{exc.strerror}; the next summary may come early")  # fmt: skip

    module.exit_json(
        changed=False,
        kind=facts.kind,
        due=due,
        sent=sent,
        errors=failed,
        would_send=channels,
        subject=message.subject,
        text=message.text,
        facts=facts.as_dict(),
    )


if __name__ == "__main__":
    main()

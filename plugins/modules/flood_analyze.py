#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: flood_analyze
short_description: Measure SMTP session occupancy and select flooding sources from gateway logs
description:
  - Reads the mail gateway's logs, pairs each SMTP session from its connect to its
    disconnect, measures session occupancy (concurrent sessions divided by the gateway's
    capacity) over a window ending at O(now), and, when occupancy is above
    O(trigger_occupancy) or O(force) is set, selects the sources that match the rules.
  - A source matches a rule when at least C(min_sessions) of its sessions in the window
    lasted C(min_duration) seconds or more and its risk is at least C(min_risk) percent.
    The defaults are the three conditions of the source paper (July 2016).
  - The module only reads; it runs the same in check mode.
version_added: 0.1.0
author:
  - campusnet network operations
options:
  paths:
    description:
      - Log files or glob patterns. C(.gz) files are read transparently.
      - A rotated family (C(mail.log.2.gz), C(mail.log.1), C(mail.log), Postfix's dated
        C(mail.log.20261203-161500.gz), or an ESA's C(mail_logs.@20261203T101530.s) next to
        its current C(.c) file) is read oldest first and sessions continue across its files.
      - A missing file or a pattern that matches nothing fails the task, naming it.
      - A file named twice, through a symlink, or copied under another name, compressed or
        not (C(mail.log.1) next to the C(mail.log.1.gz) logrotate is writing), or one the log
        has grown past (its whole text, uncompressed, is the start of another file's) is read
        once, in the file with more text; the copy is left out with a warning naming both.
      - Lines that name no gateway host (an ESA's or Exim's own file, Postfix's
        C(maillog_file)) pair sessions only within their rotated family, so that two gateways'
        files never share a session; give each gateway's files one family.
    type: list
    elements: str
    required: true
  format:
    description:
      - Log format. V(auto) recognises it from the first lines of the files, trying
        V(exchange), V(jsonl), V(cisco_esa), V(exim), V(sendmail) and V(postfix) in that order.
      - V(jsonl) is recognised only with its default field names; otherwise give it here.
      - A format given here that fits none of the files (no line is a session event of it and
        the files look like another format) fails the task, naming the format they look like;
        one that fits some files but not another warns and lists that file in
        RV(stats.unmatched_files).
    type: str
    default: auto
    choices: [auto, postfix, cisco_esa, exim, exchange, sendmail, jsonl]
  capacity:
    description: The gateway's maximum number of concurrent SMTP sessions.
    type: int
    required: true
  window:
    description:
      - Length of the analysed window ending at O(now), in seconds or as a number with
        V(s), V(m), V(h) or V(d).
    type: raw
    default: 30m
  now:
    description:
      - ISO 8601 time of the check. Default is the newest timestamp in the logs, so replaying
        old logs needs no flag. Lines after O(now) are ignored.
    type: str
  year:
    description:
      - Year of timestamps that carry none. Default is inferred, from O(now) when given (the
        year that puts a line nearest to it) or else from each file's modification time
        (a December line in a file written in January is last year's).
    type: int
  timezone:
    description: IANA time zone of timestamps that carry no offset. Default is the controller's.
    type: str
  trigger_occupancy:
    description: Occupancy in percent above which candidates are selected.
    type: float
    default: 20
  alert_occupancy:
    description: Occupancy in percent above which RV(alert) is set.
    type: float
    default: 40
  force:
    description: Select candidates whatever the occupancy (emergency runs).
    type: bool
    default: false
  rules:
    description:
      - Selection rules, applied in list order; a candidate's RV(candidates[].rule) is the
        first that it matches.
      - Default is the paper's three; C(cond1) 20 s, 40 sessions, 95%; C(cond2) 200 s,
        1 session, 95%; C(cond3) 0 s, 300 sessions, 0%.
    type: list
    elements: dict
    suboptions:
      name:
        description: Name reported for sources that match.
        type: str
        required: true
      min_duration:
        description:
          - Seconds (or a number with s, m, h, d) a session must last to count; V(0) counts
            every session.
          - Required, like O(rules[].min_sessions), so that a rule of only a name cannot select
            every source that sent one session.
        type: raw
        required: true
      min_sessions:
        description: How many such sessions a source needs, at least 1.
        type: int
        required: true
      min_risk:
        description: Risk in percent the source needs.
        type: float
        default: 0
  risk_source:
    description:
      - Where risk scores come from. V(log) uses what the log carries (Postfix postscreen's
        C(DNSBL rank N), mapped with O(postscreen_threshold)); V(file) reads O(risk_file);
        V(dnsbl) queries O(dnsbl_zones) for the sources that already satisfy a rule's
        session part; V(none) gives every source O(unknown_risk).
    type: str
    default: log
    choices: [log, file, dnsbl, none]
  risk_file:
    description: CSV file of C(ip,risk) lines for O(risk_source=file).
    type: path
  unknown_risk:
    description: Risk in percent of a source that has no score.
    type: float
    default: 0
  postscreen_threshold:
    description:
      - The site's C(postscreen_dnsbl_threshold). A postscreen DNSBL rank equal to it maps to
        a risk of 95%, proportionally below and above, at most 100%.
    type: int
    default: 1
  dnsbl_zones:
    description: DNSBL zones for O(risk_source=dnsbl); risk is the sum of the weights of the
      zones that list a source, at most 100.
    type: list
    elements: dict
    suboptions:
      zone:
        description: Zone name, for example V(dnsbl.example.org).
        type: str
        required: true
      weight:
        description: Percent added when the zone lists the source.
        type: float
        default: 100
  dnsbl_nameservers:
    description: Name servers to ask for DNSBL look-ups; default is the system resolver.
    type: list
    elements: str
  dnsbl_port:
    description: Port of O(dnsbl_nameservers).
    type: int
    default: 53
  dnsbl_timeout:
    description: Seconds to wait for each DNSBL answer.
    type: float
    default: 2
  report_path:
    description: Also write the full per-source report as JSON there (written atomically).
    type: path
  state_path:
    description:
      - Carry the analysis to the next run in this file (JSON, written atomically, mode 0600),
        so that the next run reads only the lines written since. It holds, for every file
        read, its identity (device and inode, and a digest of its first 4 KiB) and how far it
        was read, and the open sessions, the sessions that ended in the window, the
        postscreen ranks and the counters.
      - The result is the one a full read of the files would give. A live file that grew,
        and newer files of its rotated family (also when the file read last time was renamed
        or compressed by the rotation), are read on from where the last run stopped.
        Anything else falls back to a full read and says why in RV(state.full_read), such as a
        file gone, shortened or rewritten, an older file added, another O(format), O(timezone) or
        O(year), O(servers) set or emptied (Postfix deliveries are read only with servers), a
        window reaching before the last run's, or O(now) before it.
      - A last line still being written (without its newline) is left for the next run.
      - Not written in check mode, and not when a file could not be read to its end or when
        lines lie after O(now); the next run then goes on from the previous state.
      - Keep one state file per set of O(paths); give each gateway's log its own rotated
        family, as a gateway whose lines are split over several families (C(mail.warn) next
        to C(mail.log)) can be paired in another order than a full read would.
    type: path
  jsonl_fields:
    description:
      - For O(format=jsonl), which field of each JSON object holds what. Keys are roles, values
        a field name or a list of names (the first one present counts); a dotted name such as
        V(client.ip) reaches into nested objects when no field has that exact name; V(null)
        turns a role off. Roles left out keep their defaults.
      - C(time) (default V(time), V(timestamp), V(@timestamp), V(ts)), ISO 8601 text or epoch
        seconds (larger numbers are milli-, micro- or nanoseconds); C(source) (V(src), V(source),
        V(src_ip), V(client_ip)), the client's address, also as C(address:port) or C([address]:port)
        (IPv6 with a port only in brackets: an unbracketed C(2001:db8::3:25) is read whole, as that
        address); C(session) (V(session), V(session_id), V(sid)); C(event) (V(event), V(action));
        C(risk) (V(risk)), in percent; C(destination) (V(server), V(relay)), the internal server the
        gateway passes the session to, which makes the line also a gateway-to-server session of the
        same id; C(reply) (V(reply), V(code)), an SMTP reply whose 4xx counts for the destination
        when the line has one, else for the source; C(host) (off), the gateway that wrote the line.
      - Every line needs a time and a source or destination; a session event also needs a
        session. Other lines are counted in RV(stats.skipped).
    type: dict
  jsonl_events:
    description:
      - For O(format=jsonl), which values of the event field open and end a session, as
        C(connect), C(disconnect) and C(ending) each with a value or a list of values
        (compared without case). C(ending) ends the session where it stands, such as a
        timeout; a disconnect that follows it is not counted again.
      - By default C(connect) is V(connect), V(open) or V(start); C(disconnect) is
        V(disconnect), V(close), V(closed) or V(end); C(ending) is V(timeout) or V(lost).
        When given, the option replaces the default and must name C(connect) and
        C(disconnect).
    type: dict
  servers:
    description:
      - Internal mail servers whose occupancy (the gateway's concurrent sessions to each of
        them) is reported in RV(servers), against O(server_share) of O(capacity). Each is an
        IP address or a mapping with C(name) and C(address).
      - The source paper capped each server at 25% of the gateway's sessions.
    type: list
    elements: raw
  server_share:
    description:
      - The share of O(capacity), in percent, that one internal server may take.
    type: float
    default: 25.0
  attack_kinds:
    description:
      - Thresholds of the attack-kind labels of the candidates and of the run; any of
        C(flood_sessions) (default 300, the paper's cond3), C(slow_seconds) (200, cond2),
        C(storm_replies) (20), C(ddos_sources) (10) and C(ddos_sessions) (40, cond1).
      - A source is a C(few_source_flood) with C(flood_sessions) sessions in the window, a
        C(slow_post) with a session of C(slow_seconds), a C(421_storm) when it drew
        C(storm_replies) 421s (from the gateway, or from the servers its mail went to). When
        C(ddos_sources) sources have C(ddos_sessions) sessions each, those that are not a
        few-source flood are a C(many_source_flood). Two kinds or more make it C(mixed).
    type: dict
attributes:
  check_mode:
    support: full
    description: The module only reads logs; it behaves the same in check mode.
  diff_mode:
    support: none
notes:
  - C(postfix) reads smtpd and postscreen sessions with syslog, Postfix C(maillog_file) and
    RFC 3339 timestamps. A postscreen session runs from C(CONNECT) to C(DISCONNECT),
    C(HANGUP) or C(COMMAND TIME LIMIT); a connection that postscreen passes on to smtpd is one
    session from its C(CONNECT) to smtpd's C(disconnect). C(DNSBL rank) gives the risk (see
    O(postscreen_threshold)); C(PREGREET), C(COMMAND TIME LIMIT), C(ALLOWLISTED) and
    C(DENYLISTED) (and the older C(WHITELISTED), C(BLACKLISTED)) are noted per source.
    C(postfix/smtp) deliveries are the gateway's sessions to internal servers (from
    connection set-up to the delivery line, by C(delays=)); a 4xx a server answers counts
    for the server and, through the queue id's C(client=), for the source of the message.
    4xx replies to clients (C(reject:) lines, connection limits) count per source.
  - Every reader undoes the folds of a logger, rsyslog's C(message repeated N times) and
    sysklogd's C(last message repeated N times) count as N lines each (at most 10,000). A fold
    is only one right after the syslog header: the same words inside a message (a client's
    text) or in an MTA's own file are read as the line they are.
  - A session counts in the window when any part of it lies inside. Its duration is its
    whole length, or its age at O(now) when it is still open. A session whose pid logs a new
    connect before its disconnect ends at the last line seen from it.
  - A session whose connect lies before the first line read is counted from that first line,
    the least it can have lasted.
  - Lines that cannot be parsed are counted in RV(stats.skipped) and reported as a warning;
    they never stop the analysis. A value out of range in a field a reader knows (a JSON risk
    outside 0 to 100, an SBRS outside -10 to 10, an Exim C(D=) longer than a week) is left out
    and counted in RV(stats.bad_fields). A byte order mark at the start of a file is ignored.
  - An end line with no start that is read twice (a log shipped twice) counts once, in every
    format; C(repeated_lines) in RV(stats) counts the copies.
  - Only what the gateway itself wrote names a source, never text a client sent (a HELO name,
    a quoted command, a sender, a message id); that is Sendmail's own C(relay=) field, and
    Exim's own C(H=) and C(D=) fields. A Sendmail C(ruleset=) line with more than one
    C(relay=) field (a rule's argument imitating it) names nobody and is skipped with a
    warning; Exim's verdict words count only outside C(<...>) and C("...").
  - Run it on the log host itself for large logs and bring back only the result; with
    O(state_path) a cycle reads only the lines written since the last.
  - C(exim) reads an Exim main log written with C(log_selector = +smtp_connection) (add
    C(+incoming_port) so that concurrent sessions of one address pair exactly). Sessions pair
    on the client's address and port, not on C([pid]) or C(Ci=), because the daemon writes the
    start line before it forks; an end line's C(D=) gives the session's length. Deliveries
    with C(DT=) (C(+deliver_time)) are server sessions, deferrals count the servers' 4xx.
  - C(sendmail) keys sessions by host and pid. Sendmail logs no normal end, so a session
    ends at a closing line (did not issue MAIL, lost input channel, timeout, collect errors,
    check_relay reject), when the pid names another client, or at its last line once silent
    for 120 s after a settled message or 3600 s after any other line; a session of one line
    has no length. Delivery lines count the servers' 4xx but add no server sessions.
  - C(cisco_esa) reads Cisco ESA text mail logs (C(mail_logs)), from the appliance's file or a
    syslog push with or without a host. A session runs from C(New SMTP ICID) to C(ICID N close),
    or to C(ICID N lost) when the connection broke off;
    the policy line's SBRS gives the risk, (10 - SBRS) x 5 percent, and C(None) or C(rfc1918)
    none. TCPREFUSE ends a session at once. Delivery connections (DCID) are the server
    sessions; a C(Delayed:) 4xx counts for the server, never for the client of the message.
  - C(exchange) reads Microsoft Exchange SMTP protocol logs (CSV with a C(#Fields:) header).
    A session runs from its session id's C(+) to its C(-), also across the hourly files; a
    4xx the gateway sent counts for the client. Receive logs are the client sessions, Send logs
    the server sessions. With O(state_path), the header last read is kept for a file read on
    mid-file. Exchange logs carry no risk. A C(#Fields:) header without C(date-time),
    C(session-id), C(remote-endpoint) or C(event) makes its lines skipped, with a warning that
    names the missing field.
  - C(jsonl) reads one JSON object a line by O(jsonl_fields) and O(jsonl_events). Lines longer
    than 1 MiB, nested too deeply, or not JSON objects are skipped and counted; bytes that are
    not UTF-8 are read as replacement characters.
"""

EXAMPLES = r"""
- name: Analyse the last 30 minutes of the gateway log
  campusnet.smtpguard.flood_analyze:
    paths:
      - /var/log/mail.log*
    capacity: 1000
  register: analysis

- name: Replay an old incident with stricter rules
  campusnet.smtpguard.flood_analyze:
    paths: [/srv/incidents/2016-05-12/mail.log.gz]
    capacity: 1000
    now: "2016-05-12T03:30:00+09:00"
    timezone: Asia/Tokyo
    window: 1h
    force: true
    rules:
      - {name: cond1, min_duration: 20, min_sessions: 50, min_risk: 95}
      - {name: cond2, min_duration: 300, min_sessions: 1, min_risk: 95}
"""

RETURN = r"""
occupancy:
  description:
    - Session occupancy of the gateway. C(series) is, for each minute of the window (longer
      steps for windows over 12 hours), the most sessions at once, for a chart.
  returned: success
  type: dict
  sample:
    capacity: 100
    current_sessions: 32
    current: 32.0
    peak_sessions: 41
    peak: 41.0
    peak_at: "2026-12-03T16:20:11+00:00"
    mean_sessions: 18.2
    mean: 18.2
    series:
      - {at: "2026-12-03T16:19:00+00:00", sessions: 41, percent: 41.0}
triggered:
  description: Current occupancy is above O(trigger_occupancy), or O(force) is set.
  returned: success
  type: bool
alert:
  description: Current occupancy is above O(alert_occupancy).
  returned: success
  type: bool
forced:
  description: O(force) was set.
  returned: success
  type: bool
candidates:
  description: Sources that match a rule, most qualifying sessions first; empty unless triggered.
  returned: success
  type: list
  elements: dict
  sample:
    - {ip: 203.0.113.9, rule: cond1, rules: [cond1], sessions: 42, qualifying_sessions: 42,
       longest_session: 40, open_sessions: 1, risk: 96.0, risk_known: true,
       kinds: [many_source_flood], tempfails: 0, replies_421: 0, notes: {pregreet: 3},
       kind_numbers: {sessions: 42, longest_session: 40, slow_sessions: 0, replies_421: 0,
                      server_421: 0}}
attack:
  description:
    - The attack kinds the run shows (C(few_source_flood), C(slow_post), C(421_storm),
      C(many_source_flood), C(mixed) for two or more), with the numbers behind them and the
      thresholds used (O(attack_kinds)). Each candidate carries its own C(kinds) and
      C(kind_numbers).
  returned: success
  type: dict
  sample:
    kinds: [few_source_flood, 421_storm, mixed]
    numbers: {few_source_flood_sources: 2, slow_post_sources: 0, 421_storm_sources: 1,
              server_replies_421: 163, flooding_sources: 2, replies_421: 0, tempfails: 0}
    thresholds: {flood_sessions: 300, slow_seconds: 200, storm_replies: 20, ddos_sources: 10,
                 ddos_sessions: 40}
servers:
  description:
    - Per internal server of O(servers), the gateway's concurrent sessions to it against
      O(server_share) of O(capacity), and the temporary failures it answered.
  returned: success
  type: list
  elements: dict
  sample:
    - {name: mail1, address: 198.51.100.27, share: 25.0, sessions: 163, capacity: 37,
       current_sessions: 0, current: 0.0, peak_sessions: 2, peak: 5.41,
       peak_at: "2026-12-03T16:39:08+00:00", mean_sessions: 0.0, mean: 0.0,
       over_share: false, tempfails: 163, replies_421: 163}
rules:
  description: The rules that were applied.
  returned: success
  type: list
  elements: dict
stats:
  description:
    - Counts of the run. C(lines) = C(parsed) + C(ignored) + C(skipped) + C(after_now);
      C(matching_sources) counts sources that match a rule even when not triggered.
    - C(bad_fields) counts values out of range or unreadable that were left out (their lines
      were read without them). C(unmatched_files) lists the files none of whose lines was a
      session event of their format, each with C(path), C(format), C(lines) and C(looks_like),
      the format the file looks like when it is another one.
  returned: success
  type: dict
  sample:
    lines: 120345
    parsed: 40211
    ignored: 80130
    skipped: 4
    after_now: 0
    bad_fields: 0
    unmatched_files: []
    sessions: 20104
    open_sessions: 32
    distinct_ips: 812
    window_start: "2026-12-03T15:50:00+00:00"
    window_end: "2026-12-03T16:20:00+00:00"
state:
  description:
    - With O(state_path), what became of the state. C(resumed) is true when the run went on
      from it; C(full_read) says why everything was read otherwise; C(written) is false in
      check mode and when the state was kept as it was.
  returned: when O(state_path) is set
  type: dict
  sample:
    path: /var/lib/smtpguard/gw1.analysis-state.json
    resumed: true
    full_read: ""
    written: true
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.campusnet.smtpguard.plugins.module_utils._analyze import (
    FORMATS,
    AnalysisError,
    Settings,
    analyze,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._risk import RISK_SOURCES
from ansible_collections.campusnet.smtpguard.plugins.module_utils._rules import RuleError
from ansible_collections.campusnet.smtpguard.plugins.module_utils._timestamps import TimestampError

ARGUMENT_SPEC = dict(
    paths=dict(type="list", elements="str", required=True),
    format=dict(type="str", default="auto", choices=list(FORMATS)),
    capacity=dict(type="int", required=True),
    window=dict(type="raw", default="30m"),
    now=dict(type="str"),
    year=dict(type="int"),
    timezone=dict(type="str"),
    trigger_occupancy=dict(type="float", default=20.0),
    alert_occupancy=dict(type="float", default=40.0),
    force=dict(type="bool", default=False),
    rules=dict(
        type="list",
        elements="dict",
        options=dict(
            name=dict(type="str", required=True),
            min_duration=dict(type="raw", required=True),
            min_sessions=dict(type="int", required=True),
            min_risk=dict(type="float", default=0.0),
        ),
    ),
    risk_source=dict(type="str", default="log", choices=list(RISK_SOURCES)),
    risk_file=dict(type="path"),
    unknown_risk=dict(type="float", default=0.0),
    postscreen_threshold=dict(type="int", default=1),
    dnsbl_zones=dict(
        type="list",
        elements="dict",
        options=dict(
            zone=dict(type="str", required=True), weight=dict(type="float", default=100.0)
        ),
    ),
    dnsbl_nameservers=dict(type="list", elements="str"),
    dnsbl_port=dict(type="int", default=53),
    dnsbl_timeout=dict(type="float", default=2.0),
    report_path=dict(type="path"),
    state_path=dict(type="path"),
    jsonl_fields=dict(type="dict"),
    jsonl_events=dict(type="dict"),
    servers=dict(type="list", elements="raw"),
    server_share=dict(type="float", default=25.0),
    attack_kinds=dict(type="dict"),
)


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        required_if=[
            ("risk_source", "file", ("risk_file",)),
            ("risk_source", "dnsbl", ("dnsbl_zones",)),
        ],
        supports_check_mode=True,
    )
    params = module.params
    settings = Settings(
        paths=params["paths"],
        capacity=params["capacity"],
        format=params["format"],
        window=params["window"],
        now=params["now"],
        year=params["year"],
        timezone=params["timezone"],
        trigger_occupancy=params["trigger_occupancy"],
        alert_occupancy=params["alert_occupancy"],
        force=params["force"],
        rules=params["rules"],
        risk_source=params["risk_source"],
        risk_file=params["risk_file"],
        unknown_risk=params["unknown_risk"],
        postscreen_threshold=params["postscreen_threshold"],
        dnsbl={
            "zones": params["dnsbl_zones"],
            "nameservers": params["dnsbl_nameservers"],
            "port": params["dnsbl_port"],
            "timeout": params["dnsbl_timeout"],
        },
        report_path=params["report_path"],
        state_path=params["state_path"],
        check_mode=module.check_mode,
        format_options={
            name: params[name] for name in ("jsonl_fields", "jsonl_events") if params[name]
        },
        servers=params["servers"] or [],
        server_share=params["server_share"],
        attack_kinds=params["attack_kinds"] or {},
    )

    try:
        result = analyze(settings, warn=module.warn)
    except (AnalysisError, RuleError, TimestampError) as exc:
        module.fail_json(msg=str(exc))

    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()

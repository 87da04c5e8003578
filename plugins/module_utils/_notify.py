"""Cycle notifications: what a person reads after a cycle, how often, and its delivery.

A cycle ends in an alert when any gateway's occupancy is above its alert level, otherwise in
a summary, sent at most once per interval (the time of the last one is kept in a small JSON
file). Delivery is by e-mail through an SMTP relay, a webhook with a JSON body that Slack and
Microsoft Teams incoming webhooks accept, and syslog. A channel that fails is reported, never
raised: a lost notification must not fail a cycle that already pushed its block list.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
import logging
import logging.handlers
import os
import re
import smtplib
import socket
import ssl
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Mapping, Sequence

ALERT = "alert"
SUMMARY = "summary"
STATE_VERSION = 1
MAIL_SECURITY = ("starttls", "tls", "none")
WEBHOOK_FORMATS = ("card", "adaptive")
SYSLOG_PROTOCOLS = ("udp", "tcp")
SYSLOG_PRIORITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")


class NotifyError(Exception):
    """A setting that makes a notification impossible, worded to say what to change."""


# What the cycle did, in the terms a person reads


@dataclass
class Facts:
    """The numbers of one cycle that every channel reports."""

    kind: str
    run_kind: str
    check_mode: bool
    checked_at: str
    gateways: list[dict[str, Any]]
    blocked_new: int
    blocklist: int
    renewed: int
    spared: int
    expired: int
    capped: int
    top: list[dict[str, Any]]
    failures: list[str]
    report: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def cycle_facts(
    *,
    gateways: Mapping[str, Mapping[str, Any]],
    spare: Mapping[str, Any] | None,
    plan: Mapping[str, Any] | None,
    devices: Mapping[str, Mapping[str, Any]] | None = None,
    failures: Sequence[str] = (),
    alert_occupancy: float = 40.0,
    alert_levels: Mapping[str, float] | None = None,
    run_kind: str = "scheduled",
    check_mode: bool = False,
    top: int = 10,
    report: str | None = None,
) -> Facts:
    """Gather what a notification says from the results the cycle registered.

    `alert_levels` holds each gateway's own alert level; `alert_occupancy` is the level of a
    gateway it does not name.
    """
    spare = spare or {}
    plan = plan or {}
    levels = alert_levels or {}
    rows = [
        _gateway_row(name, result, float(levels.get(name, alert_occupancy)))
        for name, result in gateways.items()
    ]
    alert = any(row["alert"] for row in rows)

    problems = list(failures)
    problems.extend(_device_failures(devices or {}))
    dns = (spare.get("stats") or {})
    for key, label in (("timeouts", "DNS look-ups timed out"), ("failures", "DNS look-ups failed")):
        if dns.get(key):
            problems.append(f"{dns[key]} {label}; those sources were judged without a PTR name")
    for row in rows:
        if row["skipped"]:
            problems.append(f"{row['gateway']}: {row['skipped']} log lines could not be parsed")

    # Names, reasons and messages come from logs, DNS and devices: one line each, so that no
    # value can break a mail header, a syslog line or the layout of the text.
    return Facts(
        kind=ALERT if alert else SUMMARY,
        run_kind=one_line(run_kind),
        check_mode=check_mode,
        checked_at=one_line(max((row["checked_at"] for row in rows), default="")),
        gateways=one_line(rows),
        blocked_new=len(plan.get("added") or []),
        blocklist=len(plan.get("blocklist") or []),
        renewed=len(plan.get("renewed") or []),
        spared=len(spare.get("spared") or []),
        expired=sum(1 for entry in plan.get("removed") or [] if _reason(entry) == "expired"),
        capped=len(plan.get("capped") or []),
        top=one_line(_top_sources(spare, plan, limit=top)),
        failures=one_line(problems),
        report=one_line(report) if report is not None else None,
    )


_LINE_BREAKS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")


def one_line(value: Any) -> Any:
    """`value` with every line break or control character in its strings made one space."""
    if isinstance(value, str):
        return _LINE_BREAKS.sub(" ", value)
    if isinstance(value, Mapping):
        return {key: one_line(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [one_line(item) for item in value]
    return value


def _gateway_row(name: str, result: Mapping[str, Any], alert_occupancy: float) -> dict[str, Any]:
    occupancy = result.get("occupancy") or {}
    stats = result.get("stats") or {}
    return {
        "gateway": name,
        "checked_at": str(stats.get("window_end", "")),
        "current": occupancy.get("current"),
        "current_sessions": occupancy.get("current_sessions"),
        "capacity": occupancy.get("capacity"),
        "peak": occupancy.get("peak"),
        "peak_at": occupancy.get("peak_at"),
        "triggered": bool(result.get("triggered")),
        "forced": bool(result.get("forced")),
        "alert": bool(result.get("alert")),
        "alert_occupancy": alert_occupancy,
        "skipped": stats.get("skipped") or 0,
        "servers": server_rows(result.get("servers")),
    }


def server_rows(servers: object) -> list[dict[str, Any]]:
    """Named mail servers' occupancy, from a mapping of name to figures or a list of them.

    Tolerates an analysis that reports no servers (an empty list).
    """
    if isinstance(servers, Mapping):
        items = [{"name": name, **(figures or {})} for name, figures in servers.items()]
    elif isinstance(servers, list):
        items = [dict(item) for item in servers if isinstance(item, Mapping)]
    else:
        return []
    rows = []
    for item in items:
        figures = item.get("occupancy") if isinstance(item.get("occupancy"), Mapping) else item
        rows.append({"name": str(item.get("name", item.get("server", "?"))), **figures})
    return rows


def _device_failures(devices: Mapping[str, Mapping[str, Any]]) -> list[str]:
    problems = []
    for name, device in devices.items():
        if device.get("pushed") is False:
            error = f": {device['error']}" if device.get("error") else ""
            problems.append(f"{name} did not take the block list{error}")
        if device.get("warning"):
            problems.append(f"{name}: {device['warning']}")
    return problems


def _reason(entry: object) -> str:
    return str(entry.get("reason", "")) if isinstance(entry, Mapping) else ""


def _top_sources(spare: Mapping[str, Any], plan: Mapping[str, Any], *, limit: int) -> list[dict]:
    capped = {entry.get("ip") for entry in plan.get("capped") or [] if isinstance(entry, Mapping)}
    sources = [
        {**entry, "verdict": "held back" if entry.get("ip") in capped else "blocked"}
        for entry in spare.get("block") or []
    ]
    sources += [{**entry, "verdict": "spared"} for entry in spare.get("spared") or []]
    sources.sort(
        key=lambda entry: (-(entry.get("qualifying_sessions") or 0), -(entry.get("sessions") or 0))
    )
    return [
        {
            key: entry.get(key)
            for key in ("ip", "rule", "sessions", "qualifying_sessions", "longest_session",
                        "risk", "ptr", "verdict")
        }  # fmt: skip
        for entry in sources[:limit]
    ]


# The message


@dataclass
class Message:
    subject: str
    text: str
    line: str
    facts: Facts = field(repr=False)


def compose(facts: Facts) -> Message:
    """Subject, plain-text body and a one-line form (syslog) of a notification."""
    return Message(subject=_subject(facts), text=_body(facts), line=_line(facts), facts=facts)


def _label(facts: Facts) -> str:
    label = "ALERT" if facts.kind == ALERT else "summary"
    if facts.run_kind != "scheduled":
        label = f"{facts.run_kind} {label}"
    if facts.check_mode:
        label = f"{label} (dry run)"
    return label


def _blocked(facts: Facts) -> str:
    # A dry run blocks nothing; a rerun that finds the same sources renews entries in force.
    if facts.check_mode:
        renewed = f", {facts.renewed} to renew" if facts.renewed else ""
        return f"{facts.blocked_new} to block{renewed}"
    renewed = f", {facts.renewed} renewed" if facts.renewed else ""
    return f"{facts.blocked_new} blocked{renewed}"


def _occupancy_of(row: Mapping[str, Any]) -> float:
    value = row["current"]
    return float(value) if isinstance(value, (int, float)) else 0.0


def _subject(facts: Facts) -> str:
    # An alert names the gateways in alert, each against its own level; a summary the busiest.
    named = [row for row in facts.gateways if row["alert"]] or facts.gateways[:]
    named.sort(key=_occupancy_of, reverse=True)
    if facts.kind != ALERT:
        named = named[:1]
    occupancy = ", ".join(
        f"{row['gateway']} occupancy {row['current']}% (peak {row['peak']}%)" for row in named
    ) or "no gateway analysed"
    return (
        f"[smtpguard] {_label(facts)}: {occupancy}, {_blocked(facts)}, "
        f"{facts.spared} spared" + (", FAILURES" if facts.failures else "")
    )


def _body(facts: Facts) -> str:
    lines = [f"smtpguard {_label(facts)}, check at {facts.checked_at or 'unknown time'}"]
    if facts.check_mode:
        lines.append("DRY RUN: nothing was pushed or recorded")
    lines.append("")
    for row in facts.gateways:
        state = "triggered" + (" (forced)" if row["forced"] else "") if row["triggered"] else (
            "below the trigger")  # fmt: skip
        lines.append(
            f"{row['gateway']}: occupancy now {row['current']}% ({row['current_sessions']} of "
            f"{row['capacity']} sessions), peak {row['peak']}% at {row['peak_at']}; {state}"
            + (f"; above the alert level of {row['alert_occupancy']}%" if row["alert"] else "")
        )
        for server in row["servers"]:
            lines.append(
                f"  server {server['name']}: now {server.get('current', '?')}%, "
                f"peak {server.get('peak', '?')}%"
            )
    lines += [
        "",
        f"blocked: {facts.blocked_new} new, {facts.renewed} renewed, block list "
        f"{facts.blocklist} entries; spared: {facts.spared}; expired: {facts.expired}"
        + (f"; held back by the cap: {facts.capped}" if facts.capped else ""),
    ]
    if facts.top:
        lines += ["", "top sources:"]
        lines += [f"  {_source_line(entry)}" for entry in facts.top]
    lines += ["", "failures:" if facts.failures else "failures: none"]
    lines += [f"  {problem}" for problem in facts.failures]
    if facts.report:
        lines += ["", f"evidence report: {facts.report}"]
    return "\n".join(lines) + "\n"


def _source_line(entry: Mapping[str, Any]) -> str:
    name = f" ({entry['ptr']})" if entry.get("ptr") else ""
    return (
        f"{entry.get('verdict', '?'):9} {entry.get('ip')}{name}: rule {entry.get('rule')}, "
        f"{entry.get('qualifying_sessions')} qualifying of {entry.get('sessions')} sessions, "
        f"longest {entry.get('longest_session')} s, risk {entry.get('risk')}%"
    )


def _line(facts: Facts) -> str:
    gateways = "; ".join(
        f"{row['gateway']} occupancy {row['current']}% peak {row['peak']}%"
        + (" triggered" if row["triggered"] else "")
        for row in facts.gateways
    )
    return (
        f"{_label(facts)}: {gateways or 'no gateway analysed'}; {_blocked(facts)}, "
        f"{facts.spared} spared, {facts.expired} expired; failures: {len(facts.failures)}"
    )


def webhook_body(message: Message, *, style: str = "card") -> dict[str, Any]:
    """JSON body for an incoming webhook.

    `card`: Slack reads `text`; a Teams connector (Office 365 MessageCard) reads `title`,
    `text` and `themeColor`; both ignore the other's fields and the `smtpguard` facts.
    `adaptive`: a Teams Workflows message holding an Adaptive Card.
    """
    facts = message.facts.as_dict()
    if style == "adaptive":
        return {
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "content": {
                    "type": "AdaptiveCard",
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "version": "1.4",
                    "body": [
                        {"type": "TextBlock", "text": message.subject, "weight": "Bolder",
                         "wrap": True},
                        {"type": "TextBlock", "text": message.text, "wrap": True,
                         "fontType": "Monospace"},
                    ],
                },
            }],
            "smtpguard": facts,
        }  # fmt: skip
    return {
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "summary": message.subject,
        "title": message.subject,
        "themeColor": "C62828" if message.facts.kind == ALERT else "2E7D32",
        "text": f"*{message.subject}*\n```\n{message.text}```",
        "smtpguard": facts,
    }


# How often


def read_state(path: str) -> dict[str, Any]:
    """The notification state file; a missing or unreadable one is a fresh start."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_state(path: str, state: Mapping[str, Any]) -> None:
    """Write the state atomically (mode 0600)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".notify-")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump({**state, "version": STATE_VERSION}, handle, indent=1, sort_keys=True)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def summary_due(state: Mapping[str, Any], *, now: dt.datetime, interval: float) -> bool:
    """Whether a summary may go out: none yet, or the last one `interval` seconds ago."""
    last = state.get("last_summary")
    if not last:
        return True
    try:
        sent = dt.datetime.fromisoformat(str(last).replace("Z", "+00:00"))
    except ValueError:
        return True
    if sent.tzinfo is None:
        sent = sent.replace(tzinfo=dt.UTC)
    try:
        spacing = dt.timedelta(seconds=interval)
    except OverflowError:
        spacing = dt.timedelta.max
    # A clock set back leaves a last time in the future: send rather than stay silent.
    return not dt.timedelta(0) <= now - sent < spacing


# Delivery


@dataclass
class MailSettings:
    host: str
    recipients: list[str]
    sender: str
    port: int = 25
    security: str = "starttls"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 10.0
    validate_certs: bool = True
    ca_path: str | None = None

    def check(self) -> None:
        if not self.host:
            raise NotifyError("mail: give host, the SMTP relay's name or address")
        if not self.recipients:
            raise NotifyError("mail: give recipients, at least one address")
        if self.security not in MAIL_SECURITY:
            raise NotifyError(f"mail: security must be one of {', '.join(MAIL_SECURITY)}")
        if self.password and not self.username:
            raise NotifyError("mail: a password needs a username")
        if self.username and self.security == "none":
            raise NotifyError(
                "mail: refusing to send a password without TLS; use security starttls or tls"
            )


def tls_context(*, validate_certs: bool, ca_path: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_path)
    if not validate_certs:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def mail_message(message: Message, settings: MailSettings) -> EmailMessage:
    mail = EmailMessage()
    mail["Subject"] = message.subject
    mail["From"] = settings.sender
    mail["To"] = ", ".join(settings.recipients)
    mail["Date"] = formatdate(localtime=True)
    mail["Message-ID"] = make_msgid(domain=settings.sender.rpartition("@")[2] or None)
    mail["X-Smtpguard-Kind"] = message.facts.kind
    mail.set_content(message.text)
    return mail


def send_mail(message: Message, settings: MailSettings) -> None:
    """Deliver through the relay; every error names the relay's host and port."""
    settings.check()
    try:
        _send_mail(message, settings)
    except NotifyError:
        raise
    except smtplib.SMTPAuthenticationError as exc:
        raise NotifyError(
            f"the relay {settings.host}:{settings.port} refused the login of "
            f"{settings.username!r}: {exc.smtp_code} {_smtp_text(exc.smtp_error)}; check "
            "notify_mail_username and notify_mail_password"
        ) from None
    except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
        raise NotifyError(
            f"the relay {settings.host}:{settings.port} ({settings.security}) failed: "
            f"{_smtp_text(exc) or type(exc).__name__}; check notify_mail_host, notify_mail_port "
            "and notify_mail_security"
        ) from None


def _smtp_text(detail: object) -> str:
    text = detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)
    return " ".join(text.split())


def _send_mail(message: Message, settings: MailSettings) -> None:
    context = tls_context(validate_certs=settings.validate_certs, ca_path=settings.ca_path)
    if settings.security == "tls":
        client: smtplib.SMTP = smtplib.SMTP_SSL(
            settings.host, settings.port, timeout=settings.timeout, context=context
        )
    else:
        client = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
    with client:
        client.ehlo_or_helo_if_needed()
        if settings.security == "starttls":
            if not client.has_extn("starttls"):
                raise NotifyError(
                    f"the relay {settings.host}:{settings.port} does not offer STARTTLS; use "
                    "security tls (port 465) or, on a trusted network without a password, none"
                )
            client.starttls(context=context)
            client.ehlo()
        if settings.username:
            client.login(settings.username, settings.password or "")
        client.send_message(mail_message(message, settings))


def masked_url(url: str) -> str:
    """A webhook URL as it may be shown: scheme and host only (the path holds the token)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme or '?'}://{host}/…"


def post_webhook(
    body: Mapping[str, Any], *, url: str, timeout: float = 10.0, validate_certs: bool = True,
    ca_path: str | None = None,
) -> int:
    """POST the JSON body; returns the HTTP status. Errors never carry the URL.

    Credentials in the URL (user:password@host) go out as Basic authentication, never as part
    of the host. A redirect is a failure: following it would turn the POST into a GET.
    """
    parts = urllib.parse.urlsplit(url)
    try:
        hostname, port = parts.hostname, parts.port
    except ValueError:
        hostname, port = None, None
    if parts.scheme not in ("https", "http") or not hostname:
        raise NotifyError("webhook: notify_webhook_url must be an http or https URL")
    if "@" in parts.path:
        # user:pass/word@host splits at the slash: the password would pass for a host or port.
        raise NotifyError(
            "webhook: notify_webhook_url holds '@' after the host; percent-encode a user name or "
            "password in it (/ as %2F, @ as %40)"
        )
    headers = {"Content-Type": "application/json", "User-Agent": "smtpguard"}
    if parts.username is not None:
        user, password = parts.username, parts.password or ""
        pair = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")
    host = f"[{hostname}]" if ":" in hostname else hostname
    netloc = f"{host}:{port}" if port else host
    request = urllib.request.Request(
        urllib.parse.urlunsplit(parts._replace(netloc=netloc)),
        data=json.dumps(body).encode("utf-8"),
        headers=headers,
        method="POST",
    )
    handlers: list[urllib.request.BaseHandler] = [_RefuseRedirect()]
    if parts.scheme == "https":
        context = tls_context(validate_certs=validate_certs, ca_path=ca_path)
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(request, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        hint = "; give the final URL, a redirect would turn the POST into a GET" if (
            300 <= exc.code < 400) else ""  # fmt: skip
        raise NotifyError(
            f"the webhook at {masked_url(url)} answered HTTP {exc.code} {exc.reason}{hint}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise NotifyError(f"the webhook at {masked_url(url)} is unreachable: {reason}") from None
    except (ValueError, http.client.HTTPException) as exc:
        # http.client quotes the path (the token) in its message: name only the kind of error.
        raise NotifyError(
            f"the webhook at {masked_url(url)} failed ({type(exc).__name__}); check that "
            "notify_webhook_url has no spaces or control characters"
        ) from None
    if not 200 <= status < 300:
        raise NotifyError(f"the webhook at {masked_url(url)} answered HTTP {status}, not 2xx")
    return status


class _RefuseRedirect(urllib.request.HTTPRedirectHandler):
    """Leaves a 3xx answer as an HTTPError instead of following it."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, PLR0913
        return None


@dataclass
class SyslogSettings:
    address: str = "/dev/log"
    port: int = 514
    protocol: str = "udp"
    facility: str = "daemon"
    tag: str = "smtpguard"
    alert_priority: str = "warning"
    summary_priority: str = "info"

    def target(self) -> str | tuple[str, int]:
        return self.address if self.address.startswith("/") else (self.address, self.port)

    def check(self) -> None:
        if self.protocol not in SYSLOG_PROTOCOLS:
            raise NotifyError(f"syslog: protocol must be one of {', '.join(SYSLOG_PROTOCOLS)}")
        if self.facility not in logging.handlers.SysLogHandler.facility_names:
            raise NotifyError(f"syslog: {self.facility!r} is not a syslog facility")
        for priority in (self.alert_priority, self.summary_priority):
            if priority not in SYSLOG_PRIORITIES:
                raise NotifyError(
                    f"syslog: {priority!r} is not a priority; use one of "
                    + ", ".join(SYSLOG_PRIORITIES)
                )


class _RaisingSysLogHandler(logging.handlers.SysLogHandler):
    """logging swallows emit errors; a notification must know that it was lost."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        raise


_LEVELS = {
    "emerg": logging.CRITICAL, "alert": logging.CRITICAL, "crit": logging.CRITICAL,
    "err": logging.ERROR, "warning": logging.WARNING, "notice": logging.INFO,
    "info": logging.INFO, "debug": logging.DEBUG,
}  # fmt: skip


def send_syslog(message: Message, settings: SyslogSettings) -> None:
    """One line to syslog; every error names the address (and port) it went to."""
    settings.check()
    try:
        _send_syslog(message, settings)
    except OSError as exc:
        target = settings.address if settings.address.startswith("/") else (
            f"{settings.address}:{settings.port}/{settings.protocol}")  # fmt: skip
        raise NotifyError(
            f"syslog at {target} failed: {exc.strerror or exc}; check notify_syslog_address, "
            "notify_syslog_port and notify_syslog_protocol"
        ) from None


def _send_syslog(message: Message, settings: SyslogSettings) -> None:
    priority = settings.alert_priority if message.facts.kind == ALERT else settings.summary_priority
    socktype = socket.SOCK_STREAM if settings.protocol == "tcp" else socket.SOCK_DGRAM
    handler = _RaisingSysLogHandler(
        address=settings.target(),
        facility=logging.handlers.SysLogHandler.facility_names[settings.facility],
        socktype=socktype,
    )
    handler.append_nul = False
    handler.ident = f"{settings.tag}: "
    # The handler maps logging levels to priorities; keep the one configured, exactly.
    handler.mapPriority = lambda level_name: priority  # type: ignore[method-assign]
    if settings.protocol == "tcp":
        handler.setFormatter(logging.Formatter("%(message)s\n"))
    record = logging.LogRecord(
        name=settings.tag, level=_LEVELS[priority], pathname=__file__, lineno=0,
        msg="%s", args=(message.line,), exc_info=None,
    )  # fmt: skip
    try:
        handler.emit(record)
    finally:
        handler.close()

"""DNS helpers and the test DNS server, against a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import ipaddress
import signal
import subprocess
import sys
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.reversename
import pytest

from ansible_collections.campusnet.smtpguard.plugins.module_utils._dns import (
    CONFIRMED,
    ERROR,
    NO_PTR,
    UNCONFIRMED,
    Lookups,
    clean_text,
    confirm_names,
    dnsbl_query_name,
    dnsbl_risk,
    make_resolver,
    parse_dnsbl_zones,
)
from support.dns import MINIDNS_SCRIPT, Zone, dns_server_fixture, minidns

V6 = "2001:db8::25"
V6_PTR = dns.reversename.from_address(V6).to_text()
V6_BL = dnsbl_query_name(ipaddress.ip_address(V6), dns.name.from_text("bl.example")).to_text()

RECORDS = f"""
# forward-confirmed
9.113.0.203.in-addr.arpa     PTR   mail.example.ac.jp.
mail.example.ac.jp           A     203.0.113.9          600
# the name resolves, but to another address
10.113.0.203.in-addr.arpa    PTR   liar.example.com.
liar.example.com             A     198.51.100.99
# the name has no record at all
11.113.0.203.in-addr.arpa    PTR   ghost.example.net.
# the name has only AAAA, the source is IPv4
12.113.0.203.in-addr.arpa    PTR   v6only.example.org.
v6only.example.org           AAAA  2001:db8::12
# 203.0.113.13 has nothing; 203.0.113.14 has a name without PTR (NODATA)
14.113.0.203.in-addr.arpa    TXT   "no ptr here"
# the PTR is dropped by the tests
15.113.0.203.in-addr.arpa    PTR   slow.example.jp.
# the forward lookup is dropped by the tests
16.113.0.203.in-addr.arpa    PTR   fwd-timeout.example.jp.
fwd-timeout.example.jp       A     203.0.113.16
# two names, the second confirms
18.113.0.203.in-addr.arpa    PTR   a-wrong.example.jp.
18.113.0.203.in-addr.arpa    PTR   b-right.example.jp.
a-wrong.example.jp           A     203.0.113.99
b-right.example.jp           A     203.0.113.18
# a hostile name that confirms: newline, semicolon, template braces
19.113.0.203.in-addr.arpa    PTR   evil\\010name\\;rm.{{{{7*7}}}}.example.
evil\\010name\\;rm.{{{{7*7}}}}.example. A 203.0.113.19
# IPv6
{V6_PTR}  PTR  mail6.example.ac.jp.
mail6.example.ac.jp          AAAA  2001:db8::25

# DNSBLs
9.113.0.203.bl.example       A     127.0.0.2
9.113.0.203.bl2.example      A     127.0.0.4
10.113.0.203.bl.example      A     127.255.255.254
14.113.0.203.bl2.example     A     127.0.0.10
15.113.0.203.bl.example      A     192.0.2.1
16.113.0.203.bl.example      A     127.0.0.2
16.113.0.203.bl.example      A     127.255.255.252
{V6_BL}  A  127.0.0.3
"""

dns_server = dns_server_fixture(RECORDS)
FAST = {"timeout": 0.3}


def ask(
    server, *, name: str, rdtype: str, tcp: bool = False, timeout: float = 2
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, "127.0.0.1", port=server.port, timeout=timeout)


# The test server itself.


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize(
    ("name", "rdtype", "rcode", "answer", "ttl"),
    [
        ("9.113.0.203.in-addr.arpa", "PTR", "NOERROR", ["mail.example.ac.jp."], 300),
        ("MAIL.Example.AC.jp", "A", "NOERROR", ["203.0.113.9"], 600),
        ("mail.example.ac.jp", "AAAA", "NOERROR", [], None),
        ("nothing.example", "A", "NXDOMAIN", [], None),
        (
            "19.113.0.203.in-addr.arpa",
            "PTR",
            "NOERROR",
            ["evil\\010name\\;rm.{{7*7}}.example."],
            300,
        ),
    ],
    ids=["ptr", "case-insensitive", "nodata", "nxdomain", "hostile-name"],
)
def test_server_answers(dns_server, tcp, name, rdtype, rcode, answer, ttl):
    response = ask(dns_server, name=name, rdtype=rdtype, tcp=tcp)

    assert dns.rcode.to_text(response.rcode()) == rcode
    assert response.flags & dns.flags.AA
    records = [rdata.to_text() for rrset in response.answer for rdata in rrset]
    assert records == answer
    if ttl is not None:
        assert response.answer[0].ttl == ttl


def answered_in_time(server, name: str) -> bool:
    """Whether an answer for `name` arrives within 0.3 s."""
    try:
        ask(server, name=name, rdtype="A", timeout=0.3)
    except dns.exception.Timeout:
        return False
    return True


@pytest.mark.parametrize(
    ("hook", "answered"),
    [
        (lambda server: None, True),
        (lambda server: server.drop("mail.example.ac.jp"), False),
        (lambda server: server.delay("mail.example.ac.jp", 5), False),
        (lambda server: server.delay("liar.example.com", 5), True),
        (lambda server: setattr(server, "latency", 5), False),
    ],
    ids=["no-hook", "drop", "delay", "delay-other-name", "latency"],
)
def test_server_hooks_hold_answers_back(dns_server, hook, answered):
    hook(dns_server)

    assert answered_in_time(dns_server, "mail.example.ac.jp") is answered
    assert ("udp", "mail.example.ac.jp.", "A") in dns_server.queries


def test_server_fails_on_request(dns_server):
    dns_server.servfail("liar.example.com")

    failed = ask(dns_server, name="liar.example.com", rdtype="A")

    assert failed.rcode() == dns.rcode.SERVFAIL


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("lonely.example A", "expected NAME TYPE VALUE"),
        ("bad.example A 300.1.2.3", "line 2"),
        ("bad.example NOTATYPE x", "NOTATYPE"),
    ],
)
def test_zone_errors_name_the_line(line, message):
    with pytest.raises(minidns.ZoneError, match=message):
        Zone.from_text(f"# first line\n{line}\n")


def test_zone_reads_ttl_only_after_the_value():
    zone = Zone.from_text(
        'a.example A 192.0.2.1 42\nt.example TXT "x y" 7\nm.example MX 10 a.example.'
    )

    rcode, answer = zone.lookup(dns.name.from_text("t.example"), dns.rdatatype.TXT)
    assert rcode == dns.rcode.NOERROR and answer[0].ttl == 7
    assert zone.lookup(dns.name.from_text("a.example"), dns.rdatatype.A)[1][0].ttl == 42
    assert zone.lookup(dns.name.from_text("m.example"), dns.rdatatype.MX)[1][0].ttl == 300


def test_script_serves_until_sigterm(tmp_path: Path):
    zone = tmp_path / "records.zone"
    zone.write_text("9.113.0.203.in-addr.arpa PTR mail.example.ac.jp.\n", encoding="utf-8")
    pidfile, portfile = tmp_path / "dns.pid", tmp_path / "dns.port"
    command = [sys.executable, str(MINIDNS_SCRIPT), "--listen", "127.0.0.1", "--port", "0"]
    command += ["--zone", str(zone), "--pidfile", str(pidfile), "--portfile", str(portfile)]

    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        port = int(process.stdout.readline())
        query = dns.message.make_query("9.113.0.203.in-addr.arpa", "PTR")
        response = dns.query.udp(query, "127.0.0.1", port=port, timeout=2)
        assert int(portfile.read_text()) == port
        assert int(pidfile.read_text()) == process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=10)
        process.stdout.close()

    assert response.answer[0][0].to_text() == "mail.example.ac.jp."
    assert returncode == 0
    assert not pidfile.exists() and not portfile.exists()


# Forward-confirmed reverse DNS.


@pytest.mark.parametrize(
    ("address", "status", "name"),
    [
        ("203.0.113.9", CONFIRMED, "mail.example.ac.jp"),
        ("203.0.113.10", UNCONFIRMED, "liar.example.com"),
        ("203.0.113.11", UNCONFIRMED, "ghost.example.net"),
        ("203.0.113.12", UNCONFIRMED, "v6only.example.org"),
        ("203.0.113.13", NO_PTR, None),
        ("203.0.113.14", NO_PTR, None),
        ("203.0.113.15", ERROR, None),
        ("203.0.113.16", ERROR, "fwd-timeout.example.jp"),
        ("203.0.113.17", ERROR, None),
        ("203.0.113.18", CONFIRMED, "b-right.example.jp"),
        ("203.0.113.19", CONFIRMED, "evil\\010name\\;rm.{{7*7}}.example"),
        (V6, CONFIRMED, "mail6.example.ac.jp"),
        ("2001:DB8:0:0::25", CONFIRMED, "mail6.example.ac.jp"),
    ],
    ids=[
        "confirms",
        "resolves-elsewhere",
        "name-nxdomain",
        "name-nodata",
        "no-ptr-nxdomain",
        "no-ptr-nodata",
        "ptr-timeout",
        "forward-timeout",
        "servfail",
        "second-name-confirms",
        "hostile-name",
        "ipv6-nibbles",
        "ipv6-normalised",
    ],
)
def test_confirm_names(dns_server, address, status, name):
    dns_server.drop("15.113.0.203.in-addr.arpa")
    dns_server.drop("fwd-timeout.example.jp")
    dns_server.servfail("17.113.0.203.in-addr.arpa")

    results, _ = confirm_names([address], nameservers=["127.0.0.1"], port=dns_server.port, **FAST)

    (result,) = results.values()
    assert (result.status, result.name_text) == (status, name)
    assert "\n" not in (result.name_text or "")


def test_each_question_is_asked_once_a_run(dns_server):
    addresses = ["203.0.113.9", "203.0.113.9", "203.0.113.10", "203.0.113.10"]

    results, stats = confirm_names(addresses, nameservers=["127.0.0.1"], port=dns_server.port)

    assert set(results) == {"203.0.113.9", "203.0.113.10"}
    assert stats.lookups == 4
    assert len(dns_server.queries) == 4


def test_timeouts_are_counted(dns_server):
    dns_server.drop("15.113.0.203.in-addr.arpa")

    _, stats = confirm_names(
        ["203.0.113.15", "203.0.113.9"], nameservers=["127.0.0.1"], port=dns_server.port, **FAST
    )

    assert (stats.timeouts, stats.failures, stats.lookups) == (1, 0, 3)


def test_concurrency_is_bounded():
    class CountingResolver:
        in_flight = 0
        most = 0

        async def resolve(self, name, rdtype, raise_on_no_answer=False):
            CountingResolver.in_flight += 1
            CountingResolver.most = max(CountingResolver.most, CountingResolver.in_flight)
            await asyncio.sleep(0)
            CountingResolver.in_flight -= 1
            raise dns.resolver.NXDOMAIN

    async def run() -> None:
        lookups = Lookups(CountingResolver(), concurrency=3)
        names = [dns.name.from_text(f"n{i}.example") for i in range(20)]
        await asyncio.gather(*(lookups.ask(name, dns.rdatatype.A) for name in names))

    asyncio.run(run())

    assert CountingResolver.most == 3


def test_resolver_uses_only_the_given_nameservers():
    resolver = make_resolver(nameservers=["127.0.0.1", "::1"], port=5353, timeout=0.5)

    assert resolver.nameservers == ["127.0.0.1", "::1"]
    assert (resolver.port, resolver.timeout, resolver.lifetime) == (5353, 0.5, 1.0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"nameservers": ["dns.example"]}, "'dns.example' is not an IP address"),
        ({"nameservers": ["127.0.0.1"], "timeout": 0}, "timeout must be positive"),
        ({"nameservers": ["127.0.0.1"], "port": 0}, "port must be between"),
    ],
)
def test_resolver_options_are_checked(options, message):
    with pytest.raises(ValueError, match=message):
        make_resolver(**options)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("mail.example.jp", "mail.example.jp"),
        ("evil\nname\r\x00\x1b[31m", "evilname[31m"),
        ("line\u2028separator\x85", "lineseparator"),
        ("x" * 400, "x" * 297 + "..."),
    ],
    ids=["plain", "c0-controls", "unicode-separators", "cut"],
)
def test_clean_text(text, shown):
    assert clean_text(text) == shown


# DNSBL risk.

ZONES = [{"zone": "bl.example", "weight": 60}, {"zone": "bl2.example", "weight": 50}]


@pytest.mark.parametrize(
    ("address", "zones", "risk"),
    [
        ("203.0.113.9", ZONES, 100.0),
        ("203.0.113.9", [{"zone": "bl.example", "weight": 60}], 60.0),
        ("203.0.113.9", [{"zone": "bl2.example"}], 100.0),
        ("203.0.113.11", ZONES, 0.0),
        ("203.0.113.10", [{"zone": "bl.example"}], None),
        ("203.0.113.10", ZONES, 0.0),
        ("203.0.113.14", ZONES, 50.0),
        ("203.0.113.15", [{"zone": "bl.example"}], None),
        ("203.0.113.16", [{"zone": "bl.example", "weight": 30}], 30.0),
        ("203.0.113.12", ZONES, None),
        ("203.0.113.13", ZONES, 0.0),
        ("203.0.113.9", [{"zone": "dropped.example"}, {"zone": "bl2.example", "weight": 5}], 5.0),
        (V6, [{"zone": "bl.example", "weight": 70}], 70.0),
    ],
    ids=[
        "two-lists-capped",
        "weight",
        "default-weight",
        "not-listed",
        "error-code-only",
        "error-code-and-clean",
        "second-list",
        "answer-outside-127",
        "listed-and-error-code",
        "all-time-out",
        "one-times-out-other-clean",
        "one-times-out-other-lists",
        "ipv6-nibbles",
    ],
)
def test_dnsbl_risk(dns_server, address, zones, risk):
    for name in ("12.113.0.203.bl.example", "12.113.0.203.bl2.example"):
        dns_server.drop(name)
    dns_server.drop("13.113.0.203.bl.example")
    dns_server.drop("9.113.0.203.dropped.example")

    result = dnsbl_risk(
        [address], zones=zones, nameservers=["127.0.0.1"], port=dns_server.port, warn=print, **FAST
    )

    assert result == {str(ipaddress.ip_address(address)): risk}


def test_dnsbl_error_codes_warn_once_per_zone(dns_server):
    warnings: list[str] = []

    risk = dnsbl_risk(
        ["203.0.113.10", "203.0.113.16", "203.0.113.9"],
        zones=[{"zone": "bl.example"}],
        nameservers=["127.0.0.1"],
        port=dns_server.port,
        warn=warnings.append,
    )

    assert risk == {"203.0.113.10": None, "203.0.113.16": 100.0, "203.0.113.9": 100.0}
    assert len(warnings) == 1
    assert "bl.example answered 127.255.255.254" in warnings[0]


@pytest.mark.parametrize(
    ("address", "name"),
    [
        ("192.0.2.1", "1.2.0.192.zen.example."),
        ("::ffff:192.0.2.1", "1.2.0.192.zen.example."),
        ("2001:db8::1", "1.0.0.0." + "0.0.0.0." * 5 + "8.b.d.0.1.0.0.2.zen.example."),
    ],
)
def test_dnsbl_query_name(address, name):
    from ansible_collections.campusnet.smtpguard.plugins.module_utils._addresses import (
        parse_address,
    )

    zone = dns.name.from_text("zen.example")
    assert dnsbl_query_name(parse_address(address), zone).to_text() == name


@pytest.mark.parametrize(
    ("zones", "message"),
    [
        ([{"zone": ""}], "needs a zone"),
        ([{"zone": "bl.example", "weight": "heavy"}], "not a number"),
        ([{"zone": "bl.example", "weight": 150}], "0 to 100"),
        ([{"zone": "bl.example", "wieght": 10}], "unknown keys"),
        ([{"zone": "bad..example"}], "not a domain name"),
    ],
)
def test_dnsbl_zones_are_checked(zones, message):
    with pytest.raises(ValueError, match=message):
        parse_dnsbl_zones(zones)


def test_dnsbl_refuses_text_that_is_not_an_address():
    with pytest.raises(ValueError, match=r"'mail\.example' is not an IP address"):
        dnsbl_risk(["mail.example"], zones=[{"zone": "bl.example"}], nameservers=["127.0.0.1"])

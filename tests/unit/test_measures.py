"""Measurements beyond counts per source: the options that set them, the attack-kind labels at
their boundaries, and the occupancy of each internal server against its share."""

from __future__ import annotations

import math

import pytest

from ansible_collections.campusnet.smtpguard.plugins.module_utils._analyze import AnalysisError
from ansible_collections.campusnet.smtpguard.plugins.module_utils._measures import (
    KIND_DEFAULTS,
    MeasureError,
    label_sources,
    load_kinds,
    load_servers,
    server_occupancy,
)
from ansible_collections.campusnet.smtpguard.plugins.module_utils._sessions import (
    FIRST_COUNT,
    SessionBook,
)
from support.logs import NOW, PostfixLog, by_source, run_analysis

FEW, SLOW, STORM, MANY, MIXED = (
    "few_source_flood", "slow_post", "421_storm", "many_source_flood", "mixed")  # fmt: skip

# -- load_servers ---------------------------------------------------------------------------------


def test_servers_are_addresses_or_name_and_address_normalised():
    servers = load_servers([
        "198.51.100.26",
        {"name": "mail.campus.example", "address": "2001:DB8:0:0::25"},
        {"address": "::ffff:198.51.100.27"},
    ])  # fmt: skip

    assert servers == [
        ("198.51.100.26", "198.51.100.26"),
        ("mail.campus.example", "2001:db8::25"),
        ("198.51.100.27", "198.51.100.27"),
    ]
    assert load_servers(None) == [] and load_servers([]) == []


@pytest.mark.parametrize(("items", "message"), [
    (["mail.campus.example"], r"servers\[1\]: 'mail.campus.example' is not an IP address"),
    (["198.51.100.26", "198.51.100.300"], r"servers\[2\]: '198.51.100.300' is not an IP"),
    (["198.51.100.0/24"], r"servers\[1\]: '198.51.100.0/24' is not an IP address"),
    ([{"name": "mail"}], r"servers\[1\]: None is not an IP address"),
    ([None], r"servers\[1\]: None is not an IP address"),
    ([True], r"servers\[1\]: True is not an IP address"),
    ([["198.51.100.26"]], r"servers\[1\]: \['198.51.100.26'\] is not an IP address"),
    (["198.51.100.26", {"name": "again", "address": "198.51.100.26"}],
     r"servers\[2\]: 198.51.100.26 is listed twice"),
    (["2001:db8::25", "2001:DB8:0::25"], r"servers\[2\]: 2001:db8::25 is listed twice"),
], ids=["name", "bad octet", "network", "no address", "null", "bool", "list", "duplicate",
        "duplicate once normalised"])  # fmt: skip
def test_bad_servers_are_refused_naming_the_entry(items, message):
    with pytest.raises(MeasureError, match=message):
        load_servers(items)


# -- load_kinds -----------------------------------------------------------------------------------


def test_kind_thresholds_default_to_the_papers_values_and_take_overrides():
    assert load_kinds(None) == KIND_DEFAULTS
    assert KIND_DEFAULTS == {"flood_sessions": 300, "slow_seconds": 200, "storm_replies": 20,
                             "ddos_sources": 10, "ddos_sessions": 40}  # fmt: skip
    assert load_kinds({"flood_sessions": 1000, "slow_seconds": "300", "storm_replies": 1.5}) == {
        **KIND_DEFAULTS,
        "flood_sessions": 1000,
        "slow_seconds": 300,
        "storm_replies": 1.5,
    }


@pytest.mark.parametrize(("options", "message"), [
    ({"flood": 300}, r"unknown threshold 'flood'; use flood_sessions, slow_seconds"),
    ({"flood_sessions": True}, r"attack_kinds.flood_sessions must be a number, not True"),
    ({"slow_seconds": None}, r"attack_kinds.slow_seconds must be a number, not None"),
    ({"slow_seconds": [200]}, r"must be a number, not \[200\]"),
    ({"slow_seconds": "long"}, r"attack_kinds.slow_seconds must be a number, not 'long'"),
    ({"storm_replies": 0}, r"attack_kinds.storm_replies must be 1 or more, not 0"),
    ({"storm_replies": 0.99}, r"must be 1 or more, not 0.99"),
    ({"ddos_sources": -10}, r"attack_kinds.ddos_sources must be 1 or more, not -10"),
    ({"ddos_sessions": math.inf}, r"attack_kinds.ddos_sessions must be 1 or more, not inf"),
    ({"ddos_sessions": math.nan}, r"must be 1 or more, not nan"),
    ({"ddos_sessions": "inf"}, r"must be 1 or more, not 'inf'"),
], ids=["unknown", "bool", "null", "list", "text", "zero", "below one", "negative", "infinite",
        "nan", "infinite text"])  # fmt: skip
def test_bad_kind_thresholds_are_refused_naming_them(options, message):
    with pytest.raises(MeasureError, match=message):
        load_kinds(options)


# -- labels at their boundaries -------------------------------------------------------------------

SLOW_INDEX = FIRST_COUNT + 1  # thresholds (0, slow_seconds), as analyze() counts them


def _book(sessions: dict[str, list[float]], *, slow_seconds: float = 200) -> SessionBook:
    """A finished book in which each source had sessions of the given lengths."""
    book = SessionBook(window_start=NOW - 1800, now=NOW, thresholds=(0.0, slow_seconds))
    for source, lengths in sessions.items():
        for length in lengths:
            book.session(NOW - 1000, NOW - 1000 + length, source)
    book.finish()
    return book


def _label(sessions: dict[str, list[float]], *, replies=None, server_replies=None, notes=None,
           kinds=None) -> tuple[dict[str, list[str]], dict]:  # fmt: skip
    """The kinds of each source as a candidate, and the run's labels."""
    kinds = load_kinds(kinds)
    book = _book(sessions, slow_seconds=kinds["slow_seconds"])
    candidates = [{"ip": source} for source in sessions]
    run = label_sources(candidates, book, kinds=kinds, slow_index=SLOW_INDEX,
                        replies=replies or {}, server_replies=server_replies or {},
                        notes=notes or {})  # fmt: skip
    return {candidate["ip"]: candidate["kinds"] for candidate in candidates}, run


def _flooders(count: int, sessions: int) -> dict[str, list[float]]:
    return {f"203.0.113.{number}": [5.0] * sessions for number in range(1, count + 1)}


A = "203.0.113.200"

LABELS = {
    "299 sessions": ({A: [1.0] * 299}, {}, []),
    "300 sessions": ({A: [1.0] * 300}, {}, [FEW]),
    "199 s": ({A: [199.0]}, {}, []),
    "200 s": ({A: [200.0]}, {}, [SLOW]),
    "19 421s": ({A: [1.0]}, {"replies": {A: {"421": 19, "4xx": 19}}}, []),
    "20 421s": ({A: [1.0]}, {"replies": {A: {"421": 20, "4xx": 20}}}, [STORM]),
    "20 other 4xx": ({A: [1.0]}, {"replies": {A: {"421": 0, "4xx": 20}}}, []),
    "19 421s of servers": ({A: [1.0]}, {"notes": {A: {"server_421": 19}}}, []),
    "20 421s of servers": ({A: [1.0]}, {"notes": {A: {"server_421": 20}}}, [STORM]),
    "10 + 10 421s": ({A: [1.0]}, {"replies": {A: {"421": 10, "4xx": 12}},
                                  "notes": {A: {"server_421": 10}}}, [STORM]),
    "20 server tempfails": ({A: [1.0]}, {"notes": {A: {"server_tempfail": 20}}}, []),
    "flood and slow post": ({A: [1.0] * 299 + [250.0]}, {}, [FEW, SLOW, MIXED]),
    "all three": ({A: [1.0] * 299 + [250.0]}, {"replies": {A: {"421": 20, "4xx": 20}}},
                  [FEW, SLOW, STORM, MIXED]),
    "lower thresholds": ({A: [1.0] * 5 + [30.0]},
                         {"kinds": {"flood_sessions": 6, "slow_seconds": 30}},
                         [FEW, SLOW, MIXED]),
}  # fmt: skip


@pytest.mark.parametrize(("sessions", "extra", "expected"), LABELS.values(), ids=LABELS)
def test_one_sources_kinds_at_their_boundaries(sessions, extra, expected):
    kinds, _ = _label(sessions, **extra)

    assert kinds == {A: expected}


@pytest.mark.parametrize(("count", "sessions", "many"), [
    (9, 40, False), (10, 40, True), (10, 39, False), (11, 300, True),
], ids=["9 sources", "10 sources", "10 sources of 39 sessions", "11 sources of 300"])  # fmt: skip
def test_many_source_flood_needs_ddos_sources_each_with_ddos_sessions(count, sessions, many):
    kinds, run = _label(_flooders(count, sessions))

    few = sessions >= 300
    expected = ([FEW] if few else []) + ([MANY] if many and not few else [])
    assert set(map(tuple, kinds.values())) == {tuple(expected)}
    assert (MANY in run["kinds"]) is many
    assert run["numbers"]["flooding_sources"] == (count if sessions >= 40 else 0)


def test_a_flooder_among_many_is_a_few_source_flood_and_the_run_is_mixed():
    sessions = {**_flooders(9, 40), A: [1.0] * 300}

    kinds, run = _label(sessions)

    assert kinds[A] == [FEW]
    assert kinds["203.0.113.1"] == [MANY]
    assert run["kinds"] == [FEW, MANY, MIXED]
    assert run["numbers"]["flooding_sources"] == 10
    assert run["numbers"]["few_source_flood_sources"] == 1


def test_the_runs_kinds_count_every_source_not_only_candidates():
    book = _book({A: [1.0] * 300, "203.0.113.201": [250.0], "192.0.2.10": [1.0]})
    kinds = load_kinds(None)
    candidates = [{"ip": "192.0.2.10"}, {"ip": "198.51.100.99"}]  # the second has no sessions

    run = label_sources(candidates, book, kinds=kinds, slow_index=SLOW_INDEX, replies={},
                        server_replies={}, notes={})  # fmt: skip

    assert run["kinds"] == [FEW, SLOW, MIXED]
    assert [candidate["kinds"] for candidate in candidates] == [[], []]
    assert candidates[1]["kind_numbers"] == {}


@pytest.mark.parametrize(("replies_421", "storm"), [(19, False), (20, True)])
def test_servers_answering_421s_make_the_run_a_storm(replies_421, storm):
    _, run = _label({A: [1.0]}, server_replies={
        "198.51.100.27": {"421": replies_421 - 5, "4xx": 30},
        "198.51.100.26": {"421": 5, "4xx": 5}})  # fmt: skip

    assert run["kinds"] == ([STORM] if storm else [])
    assert run["numbers"]["server_replies_421"] == replies_421
    assert run["numbers"]["421_storm_sources"] == 0


def test_a_candidate_carries_the_numbers_behind_its_labels():
    candidate = {"ip": A}
    book = _book({A: [1.0] * 299 + [250.5]})
    notes = {A: {"server_421": 7, "pregreet": 2}}

    run = label_sources([candidate], book, kinds=load_kinds(None), slow_index=SLOW_INDEX,
                        replies={A: {"421": 14, "4xx": 30}}, server_replies={},
                        notes=notes)  # fmt: skip

    assert candidate["kinds"] == [FEW, SLOW, STORM, MIXED]
    assert candidate["kind_numbers"] == {
        "sessions": 300,
        "longest_session": 250.5,
        "slow_sessions": 1,
        "replies_421": 14,
        "server_421": 7,
    }
    assert (candidate["tempfails"], candidate["replies_421"]) == (30, 14)
    assert candidate["notes"] == {"server_421": 7, "pregreet": 2}
    candidate["notes"]["pregreet"] = 0
    assert notes[A]["pregreet"] == 2  # a copy, not the engine's own counts
    assert run["numbers"] == {
        "few_source_flood_sources": 1,
        "slow_post_sources": 1,
        "421_storm_sources": 1,
        "server_replies_421": 0,
        "flooding_sources": 1,
        "replies_421": 14,
        "tempfails": 30,
    }
    assert run["thresholds"] == KIND_DEFAULTS
    assert all(type(value) is int for value in run["thresholds"].values())


# -- per-server occupancy -------------------------------------------------------------------------

MAIL, NOMAIL = "198.51.100.26", "198.51.100.27"


def _servers_book(sessions: list[tuple[float, float | None, str]]) -> SessionBook:
    """The gateway's sessions to servers, as (start, end or None for open, server)."""
    book = SessionBook(window_start=NOW - 1800, now=NOW, thresholds=())
    for number, (start, end, server) in enumerate(sessions):
        if end is None:
            book.connect(f"gw1 smtp{number}".encode(), NOW + start, server)
        else:
            book.session(NOW + start, NOW + end, server)
    return book


def _occupancy(book: SessionBook, servers=((MAIL, MAIL),), *, capacity=150, share=25.0,
               replies=None) -> list[dict]:  # fmt: skip
    return server_occupancy(book, list(servers), start=NOW - 1800, end=NOW, capacity=capacity,
                            share=share, replies=replies or {},
                            format_time=lambda moment: moment - NOW)  # fmt: skip


@pytest.mark.parametrize(("capacity", "share", "expected"), [
    (150, 25, 37), (100, 25, 25), (10, 25, 2), (3, 25, 1), (1, 0.5, 1), (100, 33.3, 33),
    (200, 12.5, 25), (7, 100, 7),
])  # fmt: skip
def test_a_servers_capacity_is_the_floor_of_its_share_and_at_least_one(capacity, share,
                                                                       expected):  # fmt: skip
    (result,) = _occupancy(_servers_book([]), capacity=capacity, share=share)

    assert result["capacity"] == expected
    assert result["share"] == share


@pytest.mark.parametrize(("open_sessions", "over"), [(37, False), (38, True)])
def test_a_server_is_over_its_share_when_more_sessions_are_open_than_its_capacity(
        open_sessions, over):  # fmt: skip
    book = _servers_book([(-60, None, MAIL)] * open_sessions + [(-60, None, NOMAIL)] * 50)

    (result,) = _occupancy(book)

    assert (result["current_sessions"], result["capacity"]) == (open_sessions, 37)
    assert result["current"] == round(100 * open_sessions / 37, 2)
    assert result["over_share"] is over


def test_server_occupancy_counts_its_sessions_in_the_window_only():
    book = _servers_book([
        (-2000, -1500, MAIL),  # entered the window: counted from its start
        (-600, -300, MAIL),
        (-500, -400, MAIL),
        (-450, -420, NOMAIL),
        (-100, None, MAIL),  # still open
    ])  # fmt: skip
    # A book carried from an earlier run (state_path) still holds sessions that ended before
    # this window: not counted.
    book.ended.append((NOW - 3000, NOW - 2000, MAIL))
    before = (list(book.ended), dict(book.open_sessions))

    mail, nomail = _occupancy(book, [("mail", MAIL), ("nomail", NOMAIL)],
                              replies={NOMAIL: {"421": 4, "4xx": 6}})  # fmt: skip

    assert (mail["name"], mail["address"], mail["sessions"]) == ("mail", MAIL, 4)
    assert (mail["peak_sessions"], mail["peak_at"], mail["current_sessions"]) == (2, -500, 1)
    # 300 s in the window from the 2nd session, 300 + 100 s from the next two, 100 s open.
    assert mail["mean_sessions"] == round((300 + 300 + 100 + 100) / 1800, 2)
    assert (mail["tempfails"], mail["replies_421"]) == (0, 0)
    assert (nomail["sessions"], nomail["peak_sessions"], nomail["current_sessions"]) == (1, 1, 0)
    assert (nomail["tempfails"], nomail["replies_421"], nomail["over_share"]) == (6, 4, False)
    assert (list(book.ended), dict(book.open_sessions)) == before
    assert book.sources == {}  # not finished by the measure


@pytest.mark.parametrize("share", [0, -5, 100.5, math.nan, math.inf])
def test_server_share_outside_0_to_100_is_refused(tmp_path, share):
    log = PostfixLog().write(tmp_path / "mail.log")

    with pytest.raises(AnalysisError, match="server_share must be more than 0 and at most 100"):
        run_analysis(log, servers=[MAIL], server_share=share)


@pytest.mark.parametrize(("share", "capacity"), [(100, 40), (12.5, 5), (0.1, 1)])
def test_server_share_is_the_fraction_of_the_gateways_capacity(tmp_path, share, capacity):
    log = PostfixLog()
    log.session("192.0.2.10", start=NOW - 60, duration=5)

    result = run_analysis(log.write(tmp_path / "mail.log"), capacity=40, servers=[MAIL],
                          server_share=share)  # fmt: skip

    assert [(found["capacity"], found["share"]) for found in result["servers"]] == [
        (capacity, share)
    ]


@pytest.mark.parametrize(("options", "message"), [
    ({"servers": [MAIL, "mail.campus.example"]}, r"servers\[2\]: 'mail.campus.example' is not"),
    ({"attack_kinds": {"storm": 5}}, r"attack_kinds: unknown threshold 'storm'"),
    ({"attack_kinds": {"storm_replies": 0}}, r"attack_kinds.storm_replies must be 1 or more"),
], ids=["server", "unknown kind", "kind below one"])  # fmt: skip
def test_measure_options_are_refused_by_the_analysis_before_reading(tmp_path, options, message):
    with pytest.raises(AnalysisError, match=message):
        run_analysis(tmp_path / "missing.log", **options)


def test_attack_kinds_thresholds_reach_the_labels_of_the_analysis(tmp_path):
    log = PostfixLog()
    log.sessions("203.0.113.9", 6, start=NOW - 600, duration=2, spacing=30)
    log.sessions("192.0.2.10", 5, start=NOW - 600, duration=2, spacing=30)

    result = run_analysis(log.write(tmp_path / "mail.log"),
                          attack_kinds={"flood_sessions": 6})  # fmt: skip

    assert by_source(result)["203.0.113.9"]["kinds"] == [FEW]
    assert by_source(result)["192.0.2.10"]["kinds"] == []
    assert result["attack"]["kinds"] == [FEW]
    assert result["attack"]["thresholds"]["flood_sessions"] == 6
    assert result["servers"] == []

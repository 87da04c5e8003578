#!/usr/bin/env python3
"""The benchmark: speed and scale, side by side on the same files.

    make bench                                   # everything; about ten minutes, as root
    .venv/bin/python benchmarks/run.py --only engine,floor --sizes 1000000

Sections (`--only` picks some):

- engine       flood_analyze's engine (analyze(), defaults, window 30m) on generated gateway
               logs of 1 M and 10 M lines, pinned to one core: lines/s and peak RSS, and a
               check that it finds the planted attackers by their rules and no ordinary sender;
- floor        `wc -l` and `grep -c 'connect from'` on the same files;
- peer         `fail2ban-regex` with its Postfix filter in ddos mode on the same files (fail2ban
               is installed with apt-get when missing: the benchmark then needs root);
- incremental  a re-analysis after 1% more lines with state_path, and that its result equals
               a full read's;
- dns          PTR + forward look-ups of 10,000 candidates (spare's confirm_names) against a
               DNS server on loopback whose answers come 50 ms late: benchmarks/dnsserver.py
               (replies prepared from the zone, so that the server is not what is measured)
               or tools/minidns.py (`--dns-server minidns`); then the same again from the
               cache file a first run wrote (TTLs 300 s);
- nftables     rendering 100,000 entries with the push_blocklist template (plain Jinja2 and
               the collection's filters) and applying them atomically with `nft -f`, twice, in
               a network namespace made for it and deleted after (root);
- playbook     ansible-playbook playbooks/mitigate.yml on a tiny quiet log with the demo
               inventory: the overhead of a cycle that has nothing to do.

Results go to benchmarks/results.json (this run, and one line a run in its history) and
benchmarks/RESULTS.md (a table, with the commit measured). Timings are wall-clock seconds, the
best of --repeat runs (the median is kept too). The generated logs are kept in --data (default
/tmp/smtpguard-bench) and made again only when the generator changes.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import platform
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
SECTIONS = ("engine", "floor", "peer", "incremental", "dns", "nftables", "playbook")
TARGETS = {
    "engine_lines_per_second": 500_000,
    "engine_peak_rss_mb_10m": 300,
    "incremental_seconds": 0.2,
    "dns_seconds": 5.0,
    "nftables_seconds": 3.0,
    "playbook_seconds": 10.0,
}
# What the engine is run with: the module's defaults, and the generated gateway's facts.
ENGINE_SETTINGS = {"capacity": 500, "year": 2026, "timezone": "UTC", "postscreen_threshold": 3}


def _collection() -> None:
    """Make ansible_collections.campusnet.smtpguard importable (as tests/conftest.py does)."""
    link = ROOT / ".collections" / "ansible_collections" / "campusnet" / "smtpguard"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink("../../..", link)
    sys.path.insert(0, str(ROOT / ".collections"))


def _genlog():
    spec = importlib.util.spec_from_file_location("genlog", HERE / "genlog.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _timed(function: Callable[[], object], repeat: int) -> tuple[list[float], object]:
    times, outcome = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        outcome = function()
        times.append(time.perf_counter() - started)
    return times, outcome


def _figure(times: list[float]) -> dict:
    return {"best": round(min(times), 4), "median": round(statistics.median(times), 4),
            "runs": [round(t, 4) for t in times]}  # fmt: skip


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, check=True, capture_output=True, text=True, **kwargs)


# --- data -----------------------------------------------------------------------------------


def make_logs(data: Path, sizes: list[int]) -> dict[int, dict]:
    """The generated logs of each size, and the 1% of lines that follow each."""
    digest = hashlib.sha256((HERE / "genlog.py").read_bytes()).hexdigest()[:12]
    data.mkdir(parents=True, exist_ok=True)
    genlog = _genlog()
    logs = {}
    for size in sizes:
        path = data / f"mail-{size}-{digest}.log"
        extra = data / f"mail-{size}-{digest}.more"
        if not (path.exists() and extra.exists()):
            print(f"generating {size:,} lines into {path}", flush=True)
            genlog.write(path, size, extra=size // 100, extra_path=extra)
        logs[size] = {"path": path, "extra": extra, "bytes": path.stat().st_size}
    return logs


# --- engine ---------------------------------------------------------------------------------


def engine_child(path: str) -> None:
    """One analysis on one core; prints what it measured as JSON."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    _collection()
    from ansible_collections.campusnet.smtpguard.plugins.module_utils._analyze import (
        Settings,
        analyze,
    )

    started = time.perf_counter()
    result = analyze(Settings(paths=[path], **ENGINE_SETTINGS))
    seconds = time.perf_counter() - started
    print(json.dumps({
        "seconds": seconds,
        "lines": result["stats"]["lines"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "candidates": {c["ip"]: c["rule"] for c in result["candidates"]},
        "matching_sources": result["stats"]["matching_sources"],
        "occupancy": result["occupancy"],
    }))  # fmt: skip


def bench_engine(logs: dict[int, dict], repeat: int) -> dict:
    manifest = _genlog().manifest()
    figures = {}
    for size, log in logs.items():
        runs = []
        for _ in range(repeat if size <= 1_000_000 else max(1, repeat - 1)):
            done = _run([str(PYTHON), __file__, "--engine-child", str(log["path"])])
            runs.append(json.loads(done.stdout))
        seconds = [run["seconds"] for run in runs]
        best = min(runs, key=lambda run: run["seconds"])
        figures[size] = {
            "seconds": _figure(seconds),
            "lines_per_second": round(size / min(seconds)),
            "lines_per_second_median": round(size / statistics.median(seconds)),
            "peak_rss_mb": round(max(run["peak_rss_mb"] for run in runs), 1),
            "candidates_by_rule": dict(Counter(best["candidates"].values())),
            "occupancy": best["occupancy"],
            "finds": _finds(best["candidates"], manifest),
        }
        print(f"engine {size:,}: {figures[size]['lines_per_second']:,} lines/s, "
              f"{figures[size]['peak_rss_mb']} MB", flush=True)  # fmt: skip
    return figures


def _finds(candidates: dict[str, str], manifest: dict) -> dict:
    """Whether every planted attacker is a candidate by its rule, and no ordinary sender."""
    found = {}
    for kind, plan in manifest.items():
        if plan["rule"] is None:
            found[kind] = not any(source in candidates for source in plan["sample"])
        else:
            found[kind] = all(candidates.get(source) == plan["rule"] for source in plan["sources"])
    return found


# --- floor and peer -------------------------------------------------------------------------


def bench_floor(logs: dict[int, dict], repeat: int) -> dict:
    environment = {**os.environ, "LC_ALL": "C"}
    figures = {}
    for size, log in logs.items():
        count_lines = ["wc", "-l", str(log["path"])]
        count_connects = ["grep", "-c", "connect from", str(log["path"])]
        wc, _ = _timed(lambda: _run(count_lines, env=environment), repeat)  # noqa: B023
        grep, done = _timed(lambda: _run(count_connects, env=environment), repeat)  # noqa: B023
        figures[size] = {
            "wc_seconds": _figure(wc),
            "grep_seconds": _figure(grep),
            "grep_matches": int(done.stdout),
            "wc_lines_per_second": round(size / min(wc)),
            "grep_lines_per_second": round(size / min(grep)),
        }
    return figures


def ensure_fail2ban() -> str:
    """fail2ban-regex, installed from the distribution's packages when missing."""
    found = shutil.which("fail2ban-regex")
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError("fail2ban-regex is missing; install fail2ban or run as root")
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print("installing fail2ban with apt-get", flush=True)
    _run(["apt-get", "update", "-qq"], env=environment)
    _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "fail2ban"],
         env=environment)  # fmt: skip
    return shutil.which("fail2ban-regex") or "/usr/bin/fail2ban-regex"


def bench_peer(logs: dict[int, dict]) -> dict:
    command = ensure_fail2ban()
    version = _run([command, "--version"]).stdout.strip().splitlines()[0]
    figures = {}
    for size, log in logs.items():
        started = time.perf_counter()
        done = _run([command, str(log["path"]), "postfix[mode=ddos]"])
        seconds = time.perf_counter() - started
        summary = next(line for line in done.stdout.splitlines() if line.startswith("Lines:"))
        figures[size] = {
            "seconds": round(seconds, 2),
            "lines_per_second": round(size / seconds),
            "summary": summary,
            "version": version,
        }
        print(f"fail2ban-regex {size:,}: {figures[size]['lines_per_second']:,} lines/s",
              flush=True)  # fmt: skip
    return figures


# --- incremental ----------------------------------------------------------------------------


def incremental_child(path: str, extra: str, repeat: int) -> None:
    """A full analysis with state_path, then re-analyses after the extra lines; prints JSON."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    _collection()
    from ansible_collections.campusnet.smtpguard.plugins.module_utils._analyze import (
        Settings,
        analyze,
    )

    with tempfile.TemporaryDirectory(prefix="smtpguard-incremental-") as work:
        live, state = Path(work) / "mail.log", Path(work) / "state.json"
        shutil.copyfile(path, live)
        size = live.stat().st_size
        settings = Settings(paths=[str(live)], state_path=str(state), **ENGINE_SETTINGS)
        started = time.perf_counter()
        analyze(settings)
        first = time.perf_counter() - started
        kept = state.read_bytes()
        more = Path(extra).read_bytes()

        times, resumed = [], None
        for _ in range(repeat):
            with open(live, "r+b") as handle:
                handle.truncate(size)
                handle.seek(size)
                handle.write(more)
            state.write_bytes(kept)
            started = time.perf_counter()
            resumed = analyze(settings)
            times.append(time.perf_counter() - started)
        full = analyze(Settings(paths=[str(live)], **ENGINE_SETTINGS))

    def comparable(result: dict) -> dict:
        result = json.loads(json.dumps(result))
        result["stats"].pop("seconds")
        result.pop("state", None)
        return result

    print(json.dumps({
        "first_seconds": first,
        "seconds": times,
        "extra_lines": more.count(b"\n"),
        "state_bytes": len(kept),
        "resumed": resumed["state"]["resumed"],
        "identical_to_full_read": comparable(resumed) == comparable(full),
    }))  # fmt: skip


def bench_incremental(logs: dict[int, dict], repeat: int) -> dict:
    size = min(logs)
    log = logs[size]
    done = _run([str(PYTHON), __file__, "--incremental-child", str(log["path"]),
                 str(log["extra"]), str(repeat)])  # fmt: skip
    measured = json.loads(done.stdout)
    figure = {"base_lines": size, **measured, "seconds": _figure(measured["seconds"])}
    print(f"incremental: {figure['seconds']['best']} s, identical "
          f"{figure['identical_to_full_read']}", flush=True)  # fmt: skip
    return figure


# --- dns ------------------------------------------------------------------------------------


def _wait_for_port(process: subprocess.Popen, portfile: Path, what: str) -> int:
    """The port a server wrote to `portfile` (removed before the server was started)."""
    deadline = time.monotonic() + 60
    while not (portfile.exists() and portfile.read_text().strip()):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.05)
    return int(portfile.read_text())


def _stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def dnsserver(zone: Path, *, latency: float) -> Iterator[int]:
    """benchmarks/dnsserver.py on 127.0.0.1 with `latency`; yields its port, stops it by PID."""
    portfile = zone.with_suffix(".port")
    portfile.unlink(missing_ok=True)
    process = subprocess.Popen(
        [str(PYTHON), str(HERE / "dnsserver.py"), "--zone", str(zone), "--latency", str(latency),
         "--portfile", str(portfile)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield _wait_for_port(process, portfile, "benchmarks/dnsserver.py")
    finally:
        _stop(process)


@contextlib.contextmanager
def minidns(zone: Path, *, latency: float) -> Iterator[int]:
    """tools/minidns.py on 127.0.0.1 with `latency`; yields its port, stops it by its PID."""
    portfile = zone.with_suffix(".port")
    portfile.unlink(missing_ok=True)
    process = subprocess.Popen(
        [str(PYTHON), str(ROOT / "tools" / "minidns.py"), "--listen", "127.0.0.1", "--port", "0",
         "--zone", str(zone), "--portfile", str(portfile), "--latency", str(latency)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield _wait_for_port(process, portfile, "tools/minidns.py")
    finally:
        _stop(process)


def bench_dns(work: Path, *, server: str = "dnsserver", count: int = 10_000, latency: float = 0.05,
              concurrency: int = 500) -> dict:  # fmt: skip
    _collection()
    from ansible_collections.campusnet.smtpguard.plugins.module_utils._dns import (
        DnsCache,
        confirm_names,
    )

    addresses = [f"198.18.{index // 250}.{index % 250 + 1}" for index in range(count)]
    zone = work / "candidates.zone"
    with open(zone, "w", encoding="ascii") as handle:
        for index, address in enumerate(addresses):
            reverse = ".".join(reversed(address.split("."))) + ".in-addr.arpa"
            handle.write(f"{reverse} PTR host{index}.example.jp. 300\n")
            handle.write(f"host{index}.example.jp A {address} 300\n")
    start = dnsserver if server == "dnsserver" else minidns
    running = start(zone, latency=latency)

    cache_path = work / "dns-cache.json"
    with running as port:

        def look_up(cache=None):
            return confirm_names(addresses, nameservers=["127.0.0.1"], port=port,
                                 concurrency=concurrency, timeout=2.0, cache=cache)  # fmt: skip

        cold = DnsCache()  # empty: every question is asked, and the answers kept
        times, (results, stats) = _timed(lambda: look_up(cold), 1)
        cold.save(cache_path)

        def from_cache_file():
            warm = DnsCache.load(cache_path)
            outcome = look_up(warm)
            warm.save(cache_path)
            return outcome

        warm_times, (warm_results, warm_stats) = _timed(from_cache_file, 1)
    figure = {
        "server": server,
        "candidates": count,
        "latency_seconds": latency,
        "concurrency": concurrency,
        "seconds": round(times[0], 2),
        "confirmed": Counter(result.status for result in results.values()).get("confirmed", 0),
        "lookups": stats.as_dict(),
        "warm_seconds": round(warm_times[0], 2),
        "warm_confirmed": Counter(r.status for r in warm_results.values()).get("confirmed", 0),
        "warm_lookups": warm_stats.as_dict(),
    }
    print(f"dns ({server}): {figure['seconds']} s for {count:,} candidates, "
          f"{figure['warm_seconds']} s from the cache file", flush=True)  # fmt: skip
    return figure


# --- nftables -------------------------------------------------------------------------------


def _render_nftables(entries: list[str], generation: int) -> str:
    _collection()
    import jinja2

    from ansible_collections.campusnet.smtpguard.plugins.filter.blocklist import FilterModule

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(ROOT / "roles" / "push_blocklist" / "templates")),
        trim_blocks=True, lstrip_blocks=False, keep_trailing_newline=True, autoescape=False,
    )  # fmt: skip
    for name, function in FilterModule().filters().items():
        environment.filters[f"campusnet.smtpguard.{name}"] = function
    return environment.get_template("nftables.nft.j2").render(
        push_blocklist_entries=entries, push_blocklist_nft_family="inet",
        push_blocklist_nft_table="smtpguard", push_blocklist_nft_chain="smtp_drop",
        push_blocklist_nft_set="blocked", push_blocklist_nft_hook="input",
        push_blocklist_nft_priority=0, push_blocklist_generation=generation,
        push_blocklist_header=True, push_blocklist_nft_drop_smtp=True,
    )  # fmt: skip


def _entries(count: int, seed: int) -> list[str]:
    """Scattered sources, nine in ten IPv4, so that few of them merge into ranges."""
    chooser = random.Random(seed)
    v4 = {f"10.{chooser.randrange(256)}.{chooser.randrange(256)}.{chooser.randrange(1, 255)}"
          for _ in range(count * 9 // 10 + 2000)}  # fmt: skip
    v6 = {f"2001:db8:{chooser.randrange(65536):x}::{chooser.randrange(1, 65536):x}"
          for _ in range(count // 10 + 200)}  # fmt: skip
    return (sorted(v4)[: count * 9 // 10] + sorted(v6))[:count]


def bench_nftables(work: Path, *, count: int = 100_000) -> dict:
    if os.geteuid() != 0 or not shutil.which("nft"):
        raise RuntimeError("needs root and nft (apt-get install nftables)")
    namespace = f"sgbench-{os.getpid()}"
    figure: dict = {"entries": count, "runs": []}
    _run(["ip", "netns", "add", namespace])
    try:
        for generation, seed in ((1, 1), (2, 2)):
            entries = _entries(count, seed)
            started = time.perf_counter()
            text = _render_nftables(entries, generation)
            rendered = time.perf_counter() - started
            path = work / f"blocklist-{generation}.nft"
            path.write_text(text, encoding="ascii")
            started = time.perf_counter()
            _run(["ip", "netns", "exec", namespace, "nft", "-f", str(path)])
            applied = time.perf_counter() - started
            probe = entries[len(entries) // 2]
            family = "blocked_v6" if ":" in probe else "blocked_v4"
            _run(["ip", "netns", "exec", namespace, "nft", "get", "element", "inet", "smtpguard",
                  family, f"{{ {probe} }}"])  # fmt: skip
            figure["runs"].append({"generation": generation, "render_seconds": round(rendered, 3),
                                   "apply_seconds": round(applied, 3),
                                   "seconds": round(rendered + applied, 3)})  # fmt: skip
    finally:
        subprocess.run(["ip", "netns", "delete", namespace], check=False)
    figure["seconds"] = max(run["seconds"] for run in figure["runs"])
    print(f"nftables: {figure['seconds']} s for {count:,} entries", flush=True)
    return figure


# --- playbook -------------------------------------------------------------------------------


def bench_playbook(work: Path, repeat: int) -> dict:
    genlog = _genlog()
    log = work / "quiet.log"
    with open(log, "w", encoding="ascii") as handle:
        for second, lines in enumerate(genlog.generate(seed=3)):
            if second >= 2:
                break
            handle.writelines(line for line in lines if "198.19." not in line)
    zone = work / "empty.zone"
    zone.write_text("# nothing to spare\n")
    environment = {**os.environ, "ANSIBLE_NOCOLOR": "1"}
    with minidns(zone, latency=0.0) as port:
        environment["SMTPGUARD_DEMO_DNS_PORT"] = str(port)
        command = [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "playbooks/mitigate.yml",
                   "-i", "inventory/demo", "-e", f"smtpguard_work_dir={work / 'cycle'}",
                   "-e", json.dumps({"fetch_logs_paths": [str(log)]})]  # fmt: skip
        times, done = _timed(lambda: _run(command, cwd=ROOT, env=environment), repeat)
    recap = [line for line in done.stdout.splitlines() if "ok=" in line]
    figure = {"seconds": _figure(times), "recap": recap}
    print(f"playbook: {figure['seconds']['best']} s", flush=True)
    return figure


# --- report ---------------------------------------------------------------------------------


def commit() -> str:
    try:
        head = _run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT).stdout.strip()
        dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty.strip() else "")


def machine() -> str:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    system = f"{platform.system()} {platform.release()}"
    return f"{model or platform.processor()}, {os.cpu_count()} cores, " + (
        f"Python {platform.python_version()}, {system}"
    )


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs else "-"


def markdown(results: dict) -> str:
    engine, floor, peer = (results.get(key, {}) for key in ("engine", "floor", "peer"))
    lines = [
        "# Benchmark results",
        "",
        "Made by `make bench` (benchmarks/run.py); do not edit by hand. Figures are wall-clock,"
        " the best of several runs (median in results.json), on",
        f"{results['machine']}.",
        "",
        f"Commit **{results['commit']}**, {results['date']}.",
        "",
    ]
    if engine:
        lines += [
            "## Reading Postfix logs, side by side on the same files",
            "",
            "| lines | smtpguard engine (1 core) | peak RSS | `wc -l` | `grep -c 'connect from'` "
            "| fail2ban-regex ddos | engine / grep | engine / fail2ban |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for key, figure in engine.items():
            size = int(key)
            floor_figure = floor.get(key, {})
            peer_figure = peer.get(key, {})
            ours = figure["lines_per_second"]
            grep = floor_figure.get("grep_lines_per_second", 0)
            fail2ban = peer_figure.get("lines_per_second", 0)
            lines.append(
                f"| {size:,} | {ours:,}/s ({figure['seconds']['best']} s) "
                f"| {figure['peak_rss_mb']} MB "
                f"| {floor_figure.get('wc_lines_per_second', 0):,}/s "
                f"| {grep:,}/s | {fail2ban:,}/s "
                f"| {_ratio(ours, grep)} | {_ratio(ours, fail2ban)} |"
            )
        lines += [
            "",
            "The engine found every planted attacker by its rule and no ordinary sender: "
            + ", ".join(
                f"{int(key):,} lines {'yes' if all(figure['finds'].values()) else 'NO'}"
                for key, figure in engine.items()
            ) + ".",
            "",
        ]  # fmt: skip
    lines += ["## Targets", "", "| figure | measured | target | met | commit |",
              "|---|---:|---:|---|---|"]  # fmt: skip
    for name, section, measured, target, better in _target_rows(results):
        met = "yes" if (measured <= target if better == "lower" else measured >= target) else "no"
        at = results.get("measured", {}).get(section, {})
        when = f"{at.get('commit', '?')} ({at.get('date', '?')})"
        lines.append(f"| {name} | {measured:,} | {target:,} | {met} | {when} |")
    dns, nft = results.get("dns", {}), results.get("nftables", {})
    if "warm_seconds" in dns:
        lines += ["", f"DNS: {dns['candidates']:,} candidates against {dns['server']} with "
                  f"{dns['latency_seconds'] * 1000:.0f} ms latency, "
                  f"{dns['concurrency']} questions at "
                  f"a time: {dns['seconds']} s ({dns['lookups']['timeouts']} timeouts); again from "
                  f"the cache file the first run wrote: {dns['warm_seconds']} s "
                  f"({dns['warm_lookups']['lookups']} questions asked)."]  # fmt: skip
    if nft.get("runs"):
        lines += ["", "nftables: " + "; ".join(
            f"generation {run['generation']}: render {run['render_seconds']} s, "
            f"apply {run['apply_seconds']} s" for run in nft["runs"]) + "."]  # fmt: skip
    lines += ["", "## History", "", "| date | commit | engine 1 M lines/s | peak RSS 10 M |"
              " incremental s | dns s | nftables s | playbook s |", "|---|---|---:|---:|---:|---:|"
              "---:|---:|"]  # fmt: skip
    for entry in results.get("history", []):
        lines.append(
            "| "
            + " | ".join(
                str(entry.get(key, "-"))
                for key in (
                    "date",
                    "commit",
                    "engine_lines_per_second",
                    "engine_peak_rss_mb_10m",
                    "incremental_seconds",
                    "dns_seconds",
                    "nftables_seconds",
                    "playbook_seconds",
                )
            )
            + " |"
        )
    lines += ["", "Reproduce: `make bench` as root (installs fail2ban with apt-get when missing, "
              "makes and deletes a network namespace for nftables).", ""]  # fmt: skip
    return "\n".join(lines)


def _summary(results: dict) -> dict:
    engine = results.get("engine", {})
    summary: dict = {}
    if "1000000" in engine:
        summary["engine_lines_per_second"] = engine["1000000"]["lines_per_second"]
    if "10000000" in engine:
        summary["engine_lines_per_second_10m"] = engine["10000000"]["lines_per_second"]
        summary["engine_peak_rss_mb_10m"] = engine["10000000"]["peak_rss_mb"]
    if "incremental" in results:
        summary["incremental_seconds"] = results["incremental"]["seconds"]["best"]
    if "dns" in results:
        summary["dns_seconds"] = results["dns"]["seconds"]
    if "nftables" in results:
        summary["nftables_seconds"] = results["nftables"]["seconds"]
    if "playbook" in results:
        summary["playbook_seconds"] = results["playbook"]["seconds"]["best"]
    return summary


def _target_rows(results: dict) -> list[tuple[str, str, float, float, str]]:
    summary = _summary(results)
    rows = [
        ("engine, Postfix lines/s on one core (1 M lines)", "engine_lines_per_second", "higher"),
        ("engine, Postfix lines/s on one core (10 M lines)", "engine_lines_per_second_10m",
         "higher"),
        ("engine, peak RSS for 10 M lines (MB)", "engine_peak_rss_mb_10m", "lower"),
        ("re-analysis after 1% more lines (s)", "incremental_seconds", "lower"),
        ("PTR + forward of 10,000 candidates, 50 ms latency (s)", "dns_seconds", "lower"),
        ("render + atomic apply of 100,000 nftables entries (s)", "nftables_seconds", "lower"),
        ("mitigate.yml with nothing to do (s)", "playbook_seconds", "lower"),
    ]  # fmt: skip
    targets = {**TARGETS, "engine_lines_per_second_10m": TARGETS["engine_lines_per_second"]}
    return [(name, key.split("_")[0], summary[key], targets[key], better)
            for name, key, better in rows if key in summary]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(SECTIONS))
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", type=Path, default=Path("/tmp/smtpguard-bench"))
    parser.add_argument("--output", type=Path, default=HERE)
    parser.add_argument(
        "--dns-server",
        choices=("dnsserver", "minidns"),
        default="dnsserver",
        help="DNS server of the dns section: benchmarks/dnsserver.py or tools/minidns.py",
    )
    parser.add_argument("--engine-child", help=argparse.SUPPRESS)
    parser.add_argument("--incremental-child", nargs=3, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.engine_child:
        engine_child(options.engine_child)
        return 0
    if options.incremental_child:
        path, extra, repeat = options.incremental_child
        incremental_child(path, extra, int(repeat))
        return 0

    only = [section.strip() for section in options.only.split(",") if section.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    sizes = [int(size) for size in options.sizes.split(",")]
    results_path = options.output / "results.json"
    previous = json.loads(results_path.read_text()) if results_path.exists() else {}
    results: dict = {"commit": commit(), "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                     "machine": machine(), "targets": TARGETS}  # fmt: skip
    errors = {}

    logs = make_logs(options.data, sizes) if {"engine", "floor", "peer", "incremental"} & set(
        only) else {}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="smtpguard-bench-") as scratch:
        work = Path(scratch)
        steps: dict[str, Callable[[], object]] = {
            "engine": lambda: bench_engine(logs, options.repeat),
            "floor": lambda: bench_floor(logs, options.repeat),
            "peer": lambda: bench_peer(logs),
            "incremental": lambda: bench_incremental(logs, options.repeat),
            "dns": lambda: bench_dns(work, server=options.dns_server),
            "nftables": lambda: bench_nftables(work),
            "playbook": lambda: bench_playbook(work, options.repeat),
        }
        for section in only:
            try:
                outcome = steps[section]()
            except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
                detail = getattr(exc, "stderr", "") or ""
                errors[section] = f"{exc} {detail}".strip()[-2000:]
                print(f"{section}: failed: {errors[section]}", file=sys.stderr, flush=True)
                continue
            results[section] = {str(key): value for key, value in outcome.items()} if all(
                isinstance(key, int) for key in outcome) else outcome  # fmt: skip
    if errors:
        results["errors"] = errors
    # Sections not run this time keep their last figures, with the commit they were measured at.
    measured = {section: {"commit": results["commit"], "date": results["date"]}
                for section in only if section in results}  # fmt: skip
    for section in SECTIONS:
        if section not in results and section in previous:
            results[section] = previous[section]
            measured[section] = previous.get("measured", {}).get(section) or {
                "commit": previous.get("commit", "?"),
                "date": previous.get("date", "?"),
            }
    results["measured"] = measured

    this_run = {section: results[section] for section in only if section in results}
    entry = {"date": results["date"], "commit": results["commit"], **_summary(this_run)}
    results["history"] = [*previous.get("history", []), entry]
    options.output.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    (options.output / "RESULTS.md").write_text(markdown(results), encoding="utf-8")
    print(f"wrote {results_path} and {options.output / 'RESULTS.md'}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

"""tools/lab/lab.py's command line, refused or answered before a lab is touched.

No lab runs here: a record written by the test (complete, its daemons long gone) stands for
one, so that a command that wrongly went ahead would change or remove it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAB_PY = ROOT / "tools" / "lab" / "lab.py"
DEAD = 2**22 + 1  # above the kernel's highest PID: never a running process
DAEMONS = ("sshd-bastion", "sshd-gateway", "sshd-ips", "dns", "postfix-gateway", "nomail")


def lab(
    *args: str, directory: Path, stdout: int = subprocess.PIPE
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(LAB_PY), *args, "--dir", str(directory)],
        text=True,
        stdout=stdout,
        stderr=subprocess.PIPE,
        check=False,
        timeout=30,
    )


@pytest.fixture
def recorded(tmp_path) -> Path:
    """A lab directory whose lab.json records a complete lab and its (stopped) daemons."""
    directory = tmp_path / "lab"
    directory.mkdir()
    record = {
        "facts": {"prefix": "sglc", "number": 61},
        "namespaces": [],
        "pids": {name: {"pid": DEAD, "program": name.split("-")[0]} for name in DAEMONS},
        "links": [],
        "netns_dirs": [],
        "complete": True,
    }
    (directory / "lab.json").write_text(json.dumps(record))
    return directory


REFUSED = [
    (("down", "--duration", "5"), "lab.py down: error: unrecognized arguments: --duration 5"),
    (("down", "--prefix", "sgx"), "lab.py down: error: unrecognized arguments: --prefix"),
    (("reset", "--table"), "lab.py reset: error: unrecognized arguments: --table"),
    (("probe", "extra"), "lab.py probe: error: unrecognized arguments: extra"),
    (("probe", "--keep-window"), "unrecognized arguments: --keep-window"),
    (("status", "sshd-ips"), "lab.py status: error: unrecognized arguments: sshd-ips"),
    (("attack", "--table"), "lab.py attack: error: unrecognized arguments: --table"),
    (("up", "--background"), "lab.py up: error: unrecognized arguments: --background"),
    (("stop", "dns", "nomail"), "lab.py stop: error: unrecognized arguments: nomail"),
    (("restart", "sshd-ips", "--legit-only"), "unrecognized arguments: --legit-only"),
    (("teardown",), "invalid choice: 'teardown'"),
]


@pytest.mark.parametrize(("args", "says"), REFUSED, ids=[" ".join(args) for args, _ in REFUSED])
def test_a_command_refuses_what_belongs_to_another_before_doing_anything(recorded, args, says):
    before = (recorded / "lab.json").read_bytes()

    done = lab(*args, directory=recorded)

    assert done.returncode == 2
    assert says in done.stderr
    assert (recorded / "lab.json").read_bytes() == before


UNKNOWN = [
    (("restart",), "name the sshd to restart"),
    (("restart", "sshd-nosuch"), "no sshd 'sshd-nosuch' recorded"),
    (("restart", "dns"), "no sshd 'dns' recorded"),
    (("stop",), "name the daemon to stop"),
    (("stop", "sshd-nosuch"), "no daemon 'sshd-nosuch' recorded"),
]


@pytest.mark.parametrize(("args", "says"), UNKNOWN, ids=[" ".join(args) for args, _ in UNKNOWN])
def test_stop_and_restart_take_a_recorded_daemon_and_list_them(recorded, args, says):
    before = (recorded / "lab.json").read_bytes()
    names = DAEMONS if args[0] == "stop" else DAEMONS[:3]

    done = lab(*args, directory=recorded)

    assert done.returncode == 2, done.stderr
    assert f"lab.py {args[0]}: error: {says}" in done.stderr
    assert f"records {', '.join(names)}\n" in done.stderr
    assert "Traceback" not in done.stderr
    assert (recorded / "lab.json").read_bytes() == before  # no entry of a phantom daemon


@pytest.mark.parametrize("half_built", [False, True], ids=["after-down", "half-built"])
@pytest.mark.parametrize(
    "args", [("restart", "sshd-ips"), ("restart",), ("stop", "sshd-ips")], ids=" ".join
)
def test_stop_and_restart_without_a_lab_say_to_build_one(recorded, half_built, args):
    if half_built:
        record = json.loads((recorded / "lab.json").read_text())
        (recorded / "lab.json").write_text(json.dumps({**record, "complete": False}))
    else:
        (recorded / "lab.json").unlink()

    done = lab(*args, directory=recorded)

    assert done.returncode == 1
    assert f"no complete lab in {recorded}; run `lab.py up` first" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("args", [("status",), ("down",)], ids=" ".join)
def test_a_reader_that_stops_early_is_no_error(tmp_path, args):
    """`lab.py status | head`: the answer's reader gone before it is written."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        done = lab(*args, directory=tmp_path / "lab", stdout=writer)
    finally:
        os.close(writer)

    assert done.returncode == 0
    assert done.stderr == ""


# Every way README, tools/lab/run_all.sh, extensions/molecule and tests/lab call lab.py.
DOCUMENTED = [
    ["up"],
    ["up", "--prefix", "sglf", "--number", "31", "--dir", "/tmp/lab"],
    ["attack", "--background", "--duration", "150"],
    ["attack", "--legit-only", "--duration", "12"],
    ["attack", "--duration", "120", "--dir", "/tmp/lab"],
    ["probe"],
    ["probe", "--table", "--expect-defended"],
    ["reset"],
    ["reset", "--keep-window"],
    ["status"],
    ["stop", "sshd-ips"],
    ["restart", "sshd-ips"],
    ["down"],
    ["down", "--dir", "/run/smtpguard-lab-tests"],
]


@pytest.fixture(scope="module")
def lab_module():
    """tools/lab/lab.py imported (its dataclasses need it in sys.modules)."""
    spec = importlib.util.spec_from_file_location("smtpguard_lab", LAB_PY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.mark.parametrize("args", DOCUMENTED, ids=" ".join)
def test_every_documented_invocation_is_accepted(lab_module, args):
    parsed, extra = lab_module.parser().parse_known_args(args)

    assert (parsed.command, extra) == (args[0], [])

"""Incremental fetching: only new complete lines travel, copies follow rotation, nothing doubles."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from ansible_collections.campusnet.smtpguard.plugins.module_utils._increment import (
    IncrementError,
    apply_increments,
    known_offsets,
    read_increments,
)


class Gateway:
    """A log directory on the 'gateway' and the controller's copies, side by side."""

    def __init__(self, root: Path) -> None:
        self.logs = root / "gateway"
        self.logs.mkdir()
        self.spool = root / "spool"
        self.dest = root / "copies"

    def write(self, text: str, name: str = "mail.log") -> None:
        with (self.logs / name).open("a") as log:
            log.write(text)

    def rotate(self, suffix: str) -> None:
        """What `postfix logrotate` does: rename, then gzip the renamed file."""
        rotated = self.logs / f"mail.log.{suffix}"
        (self.logs / "mail.log").rename(rotated)
        with rotated.open("rb") as plain, gzip.open(f"{rotated}.gz", "wb") as packed:
            shutil.copyfileobj(plain, packed)
        rotated.unlink()

    def fetch(self) -> dict:
        increments, _ = read_increments(
            [str(self.logs / "mail.log*")], known_offsets(self.dest), spool=self.spool
        )
        return apply_increments(
            self.dest, [increment.as_dict() for increment in increments], chunks=self.spool
        )

    def copies(self) -> dict[str, str]:
        return {path.name: path.read_text() for path in sorted(self.dest.glob("mail.log*"))}


@pytest.fixture
def gateway(tmp_path) -> Gateway:
    return Gateway(tmp_path)


def test_second_fetch_brings_only_new_lines(gateway):
    gateway.write("a 1\na 2\n")
    assert gateway.fetch()["fetched_bytes"] == 8
    gateway.write("a 3\n")

    result = gateway.fetch()

    assert result["fetched_bytes"] == 4
    assert gateway.copies() == {"mail.log": "a 1\na 2\na 3\n"}


def test_partial_last_line_waits_for_the_next_fetch(gateway):
    gateway.write("a 1\na 2 half")
    gateway.fetch()
    assert gateway.copies() == {"mail.log": "a 1\n"}

    gateway.write(" done\n")
    gateway.fetch()

    assert gateway.copies() == {"mail.log": "a 1\na 2 half done\n"}


@pytest.mark.parametrize("lines_before_rotation", [0, 2], ids=["fetched-all", "unfetched-tail"])
def test_rotation_between_fetches_loses_and_doubles_nothing(gateway, lines_before_rotation):
    gateway.write("old 1\nold 2\n")
    gateway.fetch()
    gateway.write("".join(f"tail {n}\n" for n in range(lines_before_rotation)))
    gateway.rotate("20261203-170000")
    gateway.write("new 1\n")

    result = gateway.fetch()

    tail = "".join(f"tail {n}\n" for n in range(lines_before_rotation))
    assert gateway.copies() == {
        "mail.log": "new 1\n",
        "mail.log.20261203-170000": "old 1\nold 2\n" + tail,
    }
    assert result["renamed"] == ["mail.log -> mail.log.20261203-170000"]


def test_repeated_apply_after_an_interrupted_cycle_does_not_double(gateway):
    gateway.write("a 1\n")
    gateway.fetch()
    gateway.write("a 2\n")
    increments, _ = read_increments(
        [str(gateway.logs / "mail.log*")], known_offsets(gateway.dest), spool=gateway.spool
    )
    chunks = [increment.as_dict() for increment in increments]

    apply_increments(gateway.dest, chunks, chunks=gateway.spool)
    # The record as it was before: the cycle died after writing the copy.
    record = {"version": 1, "files": {chunks[0]["identity"]: {"name": "mail.log", "offset": 4}}}
    (gateway.dest / ".increments.json").write_text(json.dumps(record))
    apply_increments(gateway.dest, chunks, chunks=gateway.spool)

    assert gateway.copies() == {"mail.log": "a 1\na 2\n"}


def test_files_gone_from_the_gateway_are_forgotten(gateway):
    gateway.write("old\n")
    gateway.rotate("20261203-170000")
    gateway.write("new\n")
    gateway.fetch()
    (gateway.logs / "mail.log.20261203-170000.gz").unlink()

    result = gateway.fetch()

    assert result["forgotten"] == ["mail.log.20261203-170000"]
    assert gateway.copies() == {"mail.log": "new\n"}


def test_no_matching_file_says_what_to_check(gateway):
    with pytest.raises(IncrementError, match="fetch_logs_paths|matches no file"):
        read_increments([str(gateway.logs / "nothing*")], {}, spool=gateway.spool)

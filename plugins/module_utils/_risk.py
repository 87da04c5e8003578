"""Risk scores of sources, in percent: from the log, from a file, or from DNSBL zones."""

from __future__ import annotations

import csv
import io

from ansible_collections.campusnet.smtpguard.plugins.module_utils._addresses import (
    normalise_address,
)

RISK_SOURCES = ("log", "file", "dnsbl", "none")


class RiskError(ValueError):
    """A risk source that cannot be read."""


def rank_to_risk(rank: int, *, threshold: int) -> float:
    """A postscreen DNSBL rank as a risk: at postscreen's own threshold a source is 95%."""
    if rank <= 0:
        return 0.0
    return min(100.0, round(95.0 * rank / max(threshold, 1), 2))


def read_risk_file(path: str) -> tuple[dict[str, float], int]:
    """Scores from a CSV of `ip,risk` (a header line and `#` comments are allowed).

    Returns the scores and the number of lines that were skipped as malformed.
    """
    try:
        with open(path, "rb") as handle:
            text = handle.read().decode("utf-8-sig", errors="replace")
    except OSError as exc:
        raise RiskError(f"cannot read risk_file {path!r}: {exc.strerror}") from None

    scores: dict[str, float] = {}
    skipped = 0
    try:
        rows = list(csv.reader(io.StringIO(text.replace("\0", ""), newline="")))
    except csv.Error as exc:
        raise RiskError(
            f"risk_file {path!r} is not a CSV of ip,risk lines ({exc}); check that it is the "
            "gateway's reputation export"
        ) from None
    for row in rows:
        if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
            continue
        address = normalise_address(row[0].strip())
        try:
            risk = float(row[1]) if len(row) > 1 else None
        except ValueError:
            risk = None
        if address is None or risk is None or not 0 <= risk <= 100:
            if row[0].strip().lower() not in ("ip", "address", "source"):
                skipped += 1
            continue
        scores[address] = max(risk, scores.get(address, 0.0))
    return scores, skipped

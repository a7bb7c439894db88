"""Progress lines for long steps: done/total, rate, ETA, one plain line per report."""

from __future__ import annotations

import io
import re
import time

from cltm_pipeline.progress import Progress


def test_lines_say_done_total_rate_and_eta_without_carriage_returns():
    out = io.StringIO()
    p = Progress("ingest xx: decode", 200, "clips", every_s=0.0, stream=out)
    time.sleep(0.05)
    p.update(50)
    p.update(150)
    p.finish()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 3
    first = re.fullmatch(r"ingest xx: decode: 50/200 clips \(25%\), ([\d,.]+) clips/s, \d+s elapsed, ETA (\d+)s", lines[0])
    assert first, lines[0]
    rate, eta = float(first.group(1).replace(",", "")), int(first.group(2))
    assert 0 < rate < 50 / 0.05 + 1 and abs(eta - 150 / rate) <= 1
    assert lines[-1].startswith("ingest xx: decode: 200/200 clips (100%)") and lines[-1].endswith("done")


def test_reports_are_throttled():
    out = io.StringIO()
    p = Progress("embed", 10_000, every_s=3600.0, stream=out)
    for _ in range(10_000):
        p.update()
    assert out.getvalue() == ""  # nothing before every_s has passed
    p.finish()
    assert out.getvalue().count("\n") == 1 and "10,000/10,000 items (100%)" in out.getvalue()

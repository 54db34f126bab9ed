"""The report as a reader sees it: scripts/check_report.py renders report.html in headless Chromium and measures it.
Skipped where no Chromium is installed (CI installs none; `apt-get install -y chromium` to run these)."""

from __future__ import annotations

import base64
import io

import pytest
from conftest import load_script
from test_report_build import make_run

from yfpo.report.build import build_report

check_report = load_script("check_report")
pytestmark = pytest.mark.skipif(check_report.browser() is None, reason="no chromium on PATH")


def test_a_built_report_passes_the_browser_check(tmp_path):
    page = build_report(make_run(tmp_path))
    assert check_report.check(page, shots=tmp_path / "shots") == []
    assert (tmp_path / "shots" / "top.png").stat().st_size > 10_000
    assert len(list((tmp_path / "shots").glob("figure-*.png"))) == 4


def test_the_browser_check_catches_what_a_reader_trips_over(tmp_path):
    """A page with each fault of the 2026-12-07 report: a wide chart shown ~140 px high, literal backticks, a dict
    repr, an absolute path, a table wider than the window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(29, 3.7), dpi=100)  # 2900 x 370 px, like the old accuracy chart
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    png = base64.b64encode(buf.getvalue()).decode()
    page = tmp_path / "bad.html"
    page.write_text(
        "<!DOCTYPE html><html><body style='max-width:1100px'>"
        f"<img style='max-width:100%' src='data:image/png;base64,{png}'/>"
        "<p>with the `flexible` extractor; protocol = {'shots': 0}; run directory /root/runs/x</p>"
        "<div style='width:1500px'>a wide table</div></body></html>"
    )
    found = check_report.check(page)
    assert any(p.startswith("image 1") and "below 200 px high" in p for p in found)
    assert any("literal backtick" in p for p in found)
    assert any("Python repr" in p and "{'shots': 0}" in p for p in found)
    assert any("absolute path" in p and "/root/runs/x" in p for p in found)
    assert any(p.startswith("horizontal overflow") for p in found) and any(p.startswith("at 800 px") for p in found)

"""The HTML report: self-contained, and it opens in a real headless browser with the expected titles."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_drift import COLUMNS_MODEL, night, shifted, write

import batchscore
from batchscore import drift, htmlreport

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
TITLES = ("batchscore run report", "Lineage", "Drift", "Predictions", "Features")


def score(inputs: Path, out: Path, reference: Path | None = None) -> None:
    batchscore.run(
        batchscore.JobSpec(
            inputs=(str(inputs),),
            model=str(COLUMNS_MODEL),
            out=str(out),
            input_columns={"income": "annual_income"},
            keep=("application_id",),
            on_null="fill",
            reference=None if reference is None else str(reference),
        )
    )


@pytest.fixture(scope="module")
def drifted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A night scored against the night before, with income x10, a renamed region and an all-null column."""
    root = tmp_path_factory.mktemp("drifted")
    score(write(night("2026-11-19"), root / "in-19"), root / "ds=2026-11-19")
    score(write(shifted(night("2026-11-20")), root / "in-20"), root / "ds=2026-11-20", root / "ds=2026-11-19")
    return root / "ds=2026-11-20"


def test_the_page_holds_everything_and_loads_nothing(drifted, tmp_path):
    page_path = tmp_path / "report.html"
    htmlreport.write(str(page_path), drift.review(str(drifted)))
    page = page_path.read_text()
    for title in TITLES:
        assert title in page
    assert page.count("<svg") == 6 + 3  # a chart per feature and per output
    assert "no value in this run: the reference alone" in page  # debt_to_income, all null
    assert not re.search(r"<(script|link|img|iframe)\b", page) and not re.search(r"url\((?!#)", page)
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    assert "annual_income" in page and "PSI" in page and "North" in page
    assert drift.review(str(drifted)).current.lineage["model_sha256"] in page


def test_without_matplotlib_the_message_names_the_extra(drifted, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with pytest.raises(batchscore.JobSpecError, match=r"pip install 'batchscore\[report\]'"):
        htmlreport.write(str(tmp_path / "r.html"), drift.review(str(drifted)))


def browser() -> str | None:
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


def headless(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ]
    return subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=180)


def test_the_report_opens_in_a_headless_browser(drifted, tmp_path):
    binary = browser()
    if binary is None:
        print("no chromium found (apt-get install chromium): the browser check is skipped")
        pytest.skip("no headless browser installed (Debian package chromium); the HTML report was not opened")
    page = tmp_path / "report.html"
    shown = subprocess.run(
        [sys.executable, "-m", "batchscore", "report", str(drifted), "--html", str(page)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    dom = headless(binary, tmp_path / "profile-dom", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr
    headings = re.findall(r"<h[12][^>]*>(.*?)</h[12]>", dom.stdout)
    assert headings[:5] == ["batchscore run report", "Lineage", "Drift", "Predictions", "Features"]
    assert 'class="headline drift"' in dom.stdout

    shot = tmp_path / "report.png"
    result = headless(
        binary,
        tmp_path / "profile-shot",
        "--hide-scrollbars",
        "--window-size=1280,2000",
        f"--screenshot={shot}",
        page.as_uri(),
    )
    assert result.returncode == 0 and shot.exists(), result.stderr
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2000)
    colors = image.getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 50  # not blank: text, tables and charts
    pixels = {rgb for _, rgb in colors}
    assert any(r < 80 and 90 < g < 140 and b > 200 for r, g, b in pixels)  # the current run's blue
    assert any(r > 200 and g < 60 and b < 70 for r, g, b in pixels)  # a flagged column's red

"""The HTML report in a real browser: headless Chromium renders it; the tables and figures are on the page.

Chromium (Debian's ``chromium`` package) takes a screenshot of ``report.html`` and dumps its DOM
after a script, added to a copy of the page, has recorded where each table and image is (and
whether the image loaded). The test then checks the screenshot is not blank and that each table
and image region holds drawn pixels. Skipped when chromium is not installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from sepcluster.evaluate import report

from .report_fixtures import write_results

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian package 'chromium')")
WIDTH = 1400
PROBE = """<script>window.addEventListener('load', function () {
  var out = {height: document.documentElement.scrollHeight, tables: [], images: []};
  document.querySelectorAll('table').forEach(function (t) {
    var r = t.getBoundingClientRect(); out.tables.push([r.left, r.top, r.width, r.height]); });
  document.querySelectorAll('img').forEach(function (i) {
    var r = i.getBoundingClientRect();
    out.images.push([r.left, r.top, r.width, r.height, i.naturalWidth, i.getAttribute('src')]); });
  var pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre); });</script>"""


def _chromium(tmp_path, *args) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
           "--hide-scrollbars", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _probe(tmp_path, html_path) -> dict:
    """Positions of tables and images in the page as laid out at WIDTH (a probing copy of the page)."""
    probe = html_path.parent / "probe.html"
    probe.write_text(html_path.read_text().replace("</body>", PROBE + "</body>"))
    res = _chromium(tmp_path, "--virtual-time-budget=5000", f"--window-size={WIDTH},4000", "--dump-dom",
                    probe.as_uri())
    probe.unlink()
    found = re.search(r'<pre id="probe">(.*?)</pre>', res.stdout, re.S)
    assert found, f"chromium printed no probe (rc {res.returncode}): {res.stderr[-2000:]}"
    import html

    return json.loads(html.unescape(found.group(1)))


def _inked(region: np.ndarray) -> float:
    """Fraction of pixels that are not (near) white."""
    return float((region.min(axis=-1) < 235).mean())


def test_report_renders_in_headless_chromium(tmp_path):
    from PIL import Image

    for name, shift in (("a", 0.0), ("b", 1.0)):
        (tmp_path / name).mkdir()
        write_results(tmp_path / name, f"model-{name}", shift, seed=len(name) + ord(name))
    rep = report.write_report([str(tmp_path / "a"), str(tmp_path / "b")], out=str(tmp_path / "rep"),
                              methods=["TAK1", "IRM1", "UHL2"], log_mlflow=False, n_resamples=500)
    page = tmp_path / "rep" / "report.html"
    layout = _probe(tmp_path, page)
    assert len(layout["tables"]) >= 8 and len(layout["images"]) == len(rep["figures"]) == 3
    for *_, natural, src in layout["images"]:
        assert natural > 0, f"{src} did not load"
    height = int(layout["height"]) + 10
    shot = tmp_path / "shot.png"
    res = _chromium(tmp_path, f"--screenshot={shot}", f"--window-size={WIDTH},{height}", page.as_uri())
    assert shot.exists(), res.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert pixels.shape[:2] == (height, WIDTH)
    assert pixels.std() > 20 and _inked(pixels) > 0.03  # not a blank page
    for left, top, width, h in layout["tables"]:
        region = pixels[int(top):int(top + h), int(left):int(left + width)]
        assert region.size and _inked(region) > 0.05, f"table at y={top:.0f} rendered blank"
    for left, top, width, h, _, src in layout["images"]:
        region = pixels[int(top):int(top + h), int(left):int(left + width)]
        assert width > 300 and h > 150, f"{src} is {width:.0f}x{h:.0f} px"
        assert _inked(region) > 0.05 and region.std() > 20, f"{src} rendered blank"
        colored = np.abs(region[..., 0] - region[..., 2]) > 40  # the plots draw coloured marks
        assert colored.mean() > 0.001, f"{src} has no coloured marks"

"""The report as a reader sees it: opened in headless Chromium, its DOM and a screenshot of the first screen.

Chromium is driven through its command line only (``--dump-dom``, ``--screenshot``): no DevTools client, no
browser download. A copy of the report gets a small probe script that measures the laid-out page on ``load`` and
writes what it found into the DOM that ``--dump-dom`` prints; the report itself carries no script. Where no Chromium
is installed (Debian: ``apt-get install -y chromium``; ``.ci/run`` installs it) the tests skip and say why.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from robustscale.analysis import build_report

from tests.analysis.test_workflow import synthetic_table

pytestmark = pytest.mark.xdist_group("test_report_browser")  # module fixtures built once (conftest.py)

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FIGURES = ("fig1a", "fig1b", "fig1c", "fig2", "fig3a", "fig3b", "fig3c")
WINDOW = (1280, 900)  # a laptop's first screen
PROBE = """<script>
addEventListener('load', () => {
  const summary = document.getElementById('summary'), table = document.querySelector('table');
  const box = el => { const r = el.getBoundingClientRect(); return {top: r.top, width: r.width, height: r.height}; };
  const figures = %s.map(id => {
    const img = document.querySelector('#' + id + ' img');
    return {id, img: !!img, natural: img ? img.naturalWidth : 0, ...(img ? box(img) : {})};
  });
  const probe = document.createElement('pre');
  probe.id = 'probe';
  probe.textContent = JSON.stringify({
    summary: !!summary, first: !!(summary && table && summary.compareDocumentPosition(table) & 4),
    summaryBox: summary ? box(summary) : null, summaryImg: summary ? box(summary.querySelector('img')) : null,
    summaryText: summary ? summary.innerText : '', figures, viewport: innerHeight, title: document.title});
  document.body.appendChild(probe);
});
</script>"""


def _chromium() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


@pytest.fixture(scope="module")
def chromium(request) -> str:
    path = _chromium()
    if path is None:
        reason = (f"no Chromium on PATH (looked for {', '.join(BROWSERS)}; Debian: apt-get install -y chromium): "
                  "the report was not checked in a browser")
        capture = request.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print(f"\nSKIP tests/analysis/test_report_browser.py: {reason}")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("browser") / "report.html"
    content = build_report(synthetic_table(60, seed=1), out, bootstrap=50, name="browser-test sweep")
    return out, content


def _run(chromium: str, profile: Path, *args: str) -> str:
    """One headless Chromium call (its own profile folder, so parallel runs never share one); stdout."""
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
               "--no-first-run", "--mute-audio", f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
               *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"chromium exited {done.returncode}: {done.stderr[-2000:]}"
    return done.stdout


def test_the_first_screen_is_the_summary_and_every_figure_is_laid_out(chromium, report, tmp_path):
    out, content = report
    probed = tmp_path / "probed.html"
    probed.write_text(out.read_text().replace("</body>", PROBE % json.dumps(list(FIGURES)) + "</body>"))
    dom = _run(chromium, tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom", probed.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, f"the probe did not run: {dom[-500:]}"
    page = json.loads(found.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
    assert page["title"] == "Scaling laws of adversarial robustness: browser-test sweep"
    assert page["summary"] and page["first"], "the summary must come before the first table"
    assert 0 <= page["summaryBox"]["top"] < page["viewport"] / 3  # it opens the page
    assert page["summaryImg"]["width"] > 200 and page["summaryImg"]["top"] < page["viewport"]  # fig 3a on screen
    law = content["fit"]["accuracy_law"]
    assert f"α = {law['alpha']:.3g} (95% CI {law['ci']['alpha'][0]:.3g} to {law['ci']['alpha'][1]:.3g}" \
        in page["summaryText"]
    for figure in page["figures"]:
        assert figure["img"] and figure["natural"] > 0 and figure["width"] > 100 and figure["height"] > 100, figure
    tops = [figure["top"] for figure in page["figures"]]
    assert tops == sorted(tops) and tops[0] > page["summaryBox"]["top"]  # the paper's order, after the summary


def test_a_screenshot_of_the_first_screen_shows_text_and_a_figure(chromium, report, tmp_path):
    import matplotlib.image as mpimg

    shot = tmp_path / "first-screen.png"
    _run(chromium, tmp_path / "profile", f"--screenshot={shot}", report[0].as_uri())
    pixels = mpimg.imread(shot)[..., :3]
    assert pixels.shape[:2] == (WINDOW[1], WINDOW[0])
    ink = pixels.min(axis=2) < 0.5  # dark text, lines, markers
    colour = (pixels.max(axis=2) - pixels.min(axis=2)) > 0.4  # saturated: the figure's points and laws
    left, right = np.s_[:, : WINDOW[0] // 2], np.s_[:, WINDOW[0] // 2:]
    assert ink[left].mean() > 0.02, "no text in the answers' column"
    assert colour[right].sum() > 500, "no coloured figure beside the answers"
    assert len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 100  # not a blank page

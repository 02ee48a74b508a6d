"""The quick-start notebook in a real browser: JupyterLab + headless Chromium (Playwright).

Slow (opt-in: --run-slow). Needs ``jupyterlab`` and ``playwright`` in the venv and Debian's
``chromium`` (``apt-get install -y chromium``); Playwright's own browser download is never
used. The test starts JupyterLab on a free port, opens notebooks/01_quick_start.ipynb, runs
all cells, then types a new prompt into the rendered GenerateWidget, clicks Generate, waits
for the streamed text and checks it against the same seeded generation run here, in the
test process. The widget's screenshot is saved to tests/notebook/artifacts/.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from orcd_toolkit.notebook.server_process import free_port
from orcd_toolkit.notebook.sessions import run_to_end

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"
PROMPT = "The capital of France is"


@pytest.fixture
def jupyterlab(tmp_path, child_env):
    pytest.importorskip("jupyterlab")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} not found (apt-get install -y chromium)")
    shutil.copy(REPO / "notebooks" / "01_quick_start.ipynb", tmp_path)
    port, token = free_port(), secrets.token_hex(16)
    log = open(tmp_path / "jupyterlab.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", "--allow-root", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={tmp_path}", "--LabApp.expose_app_in_browser=True"],
        stdout=log, stderr=subprocess.STDOUT, env=child_env, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log.close()
            pytest.fail("JupyterLab did not start:\n"
                        + (tmp_path / "jupyterlab.log").read_text(errors="replace")[-3000:])
        time.sleep(0.5)
    yield base, token
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_start_generate_widget_in_chromium(jupyterlab, smollm2_session):
    playwright = pytest.importorskip("playwright.sync_api")
    base, token = jupyterlab
    # the text the widget must show: same model, prompt and seeded sampling, run here
    expected = run_to_end(smollm2_session.start(PROMPT, max_tokens=8, temperature=0.7,
                                                seed=42), timeout=120).text
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "quick_start_generate_widget.png"
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        try:
            shown, stats = _drive(page, base, token, expected, shot)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "failure_full_page.png"), full_page=True)
            raise
        finally:
            browser.close()
    assert shown.strip() == expected.strip() and expected.strip()
    assert stats.startswith("8 tokens · TTFT ") and "tok/s" in stats
    assert shot.stat().st_size > 5_000
    print(f"screenshot: {shot} ({shot.stat().st_size} bytes); streamed {expected!r}; {stats}")


def _drive(page, base: str, token: str, expected: str, shot: Path) -> tuple[str, str]:
    """Open, run all, type a prompt, click Generate, wait for the text; (shown, stats)."""
    page.goto(f"{base}/lab/tree/01_quick_start.ipynb?token={token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
    page.wait_for_function("window.jupyterapp !== undefined", timeout=60_000)
    # wait until the kernel is up (status bar "| Idle"), then Run > Run All Cells
    page.wait_for_function(
        "() => document.body.innerText.includes('(ipykernel) | Idle')", timeout=120_000)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    page.wait_for_selector(".jp-InputPrompt:has-text('[1]')", timeout=120_000)
    widget = page.locator(".orcd-generate").first
    widget.wait_for(timeout=240_000)
    page.wait_for_function(
        "() => [...document.querySelectorAll('.orcd-generate .orcd-stats')]"
        ".some(e => e.textContent.includes('finish:'))", timeout=240_000)
    # the notebook has run; now use the widget as a person would
    widget.locator("textarea").first.fill(PROMPT)
    widget.locator("button", has_text="Generate").click()
    page.wait_for_function(
        "(want) => { const w = document.querySelector('.orcd-generate');"
        " const out = w.querySelector('.orcd-output');"
        " const st = w.querySelector('.orcd-stats');"
        " return out && st && out.textContent === want && st.textContent.includes('finish:'); }",
        arg=expected, timeout=120_000)
    stats = widget.locator(".orcd-stats").inner_text()
    shown = widget.locator(".orcd-output").inner_text()
    widget.scroll_into_view_if_needed()
    widget.screenshot(path=str(shot))
    return shown, stats

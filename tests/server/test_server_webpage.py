"""The built-in web page streams a reply in headless Chromium (Playwright + Debian's chromium).

Needs ``pip install playwright`` and the system ``chromium`` (``apt-get install chromium``);
Playwright's own browser download is never used. Skipped with the reason when either is
missing.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from orcd_toolkit.client import Client

CHROMIUM = os.environ.get("ORCD_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright)")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)) and \
            not shutil.which("chromium"):
        pytest.skip(f"system chromium not found at {CHROMIUM} (apt-get install chromium)")
    return sync_playwright


def stable_shot(page, locator) -> bytes:
    """An element screenshot once rendering settled (font fallback for CJK/emoji re-renders
    asynchronously): two consecutive shots 100 ms apart agree; bounded tries."""
    last = locator.screenshot()
    for _ in range(20):
        page.wait_for_timeout(100)
        shot = locator.screenshot()
        if shot == last:
            return shot
        last = shot
    raise AssertionError("the element kept changing for 2 s")


_PIXEL_DIFF_JS = """
async ([a, b]) => {
  const load = (b64) => new Promise((ok, bad) => {
    const img = new Image();
    img.onload = () => ok(img);
    img.onerror = bad;
    img.src = "data:image/png;base64," + b64;
  });
  const [ia, ib] = await Promise.all([load(a), load(b)]);
  const pixels = (img) => {
    const c = document.createElement("canvas");
    c.width = img.width; c.height = img.height;
    const ctx = c.getContext("2d");
    ctx.drawImage(img, 0, 0);
    return ctx.getImageData(0, 0, img.width, img.height).data;
  };
  if (ia.width !== ib.width || ia.height !== ib.height)
    return {size_equal: false, differing: -1, total: ia.width * ia.height};
  const pa = pixels(ia), pb = pixels(ib);
  let differing = 0;
  for (let i = 0; i < pa.length; i += 4) {
    const d = Math.max(Math.abs(pa[i] - pb[i]), Math.abs(pa[i + 1] - pb[i + 1]),
                       Math.abs(pa[i + 2] - pb[i + 2]));
    if (d > 48) differing++;
  }
  return {size_equal: true, differing, total: ia.width * ia.height};
}
"""


def pixel_diff(page, a: bytes, b: bytes) -> dict:
    """Pixels that differ clearly (any channel by > 48) between two PNG screenshots, decoded
    by the browser itself (no image library needed)."""
    import base64

    return page.evaluate(_PIXEL_DIFF_JS, [base64.b64encode(a).decode(),
                                          base64.b64encode(b).decode()])


@pytest.fixture
def browser():
    sync_playwright = _playwright()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM if os.path.isfile(CHROMIUM)
                              else shutil.which("chromium"), args=ARGS)
        try:
            yield b
        finally:
            b.close()


def test_web_page_streams_a_reply_and_renders_it(server, browser, tmp_path) -> None:
    prompt = "Write a haiku about GPU computing"
    with Client(server.url, event_timeout=10) as c:
        expected = c.generate(messages=[{"role": "user", "content": prompt}], max_tokens=64,
                              temperature=0.7, seed=42).raise_for_error()

    page = browser.new_page(viewport={"width": 900, "height": 700})
    frames: list[dict] = []
    page.on("websocket", lambda ws: ws.on(
        "framereceived", lambda payload: frames.append(json.loads(payload))))
    page.goto(server.base + "/")
    page.wait_for_function("document.getElementById('model').textContent.includes('ready')",
                           timeout=10_000)
    output = page.locator("#output")
    empty_shot = stable_shot(page, output)
    page.click("#send")
    try:
        page.wait_for_function(
            "document.getElementById('status').textContent.startsWith('done')", timeout=30_000)
    except Exception as exc:  # noqa: BLE001 - report what the page showed, then fail
        raise AssertionError(f"page never finished: status={page.locator('#status').inner_text()!r}"
                             f" frames={frames[-3:]!r}") from exc
    # what the page shows is exactly what the protocol streamed, token by token
    assert output.inner_text() == expected.text
    tokens = [f for f in frames if f["type"] == "token"]
    assert [t["id"] for t in tokens] == expected.token_ids
    assert frames[0]["type"] == "started" and frames[-1]["type"] == "end"
    assert page.locator("#status").inner_text().startswith(f"done · {len(tokens)} tokens")

    shot = page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 5000
    streamed_shot = stable_shot(page, output)
    # the same text set directly renders (near) identically: the streamed reply is on screen.
    # Pixels are compared in the browser (canvas), allowing a few antialiasing differences.
    page.evaluate("t => { document.getElementById('output').textContent = t; }", expected.text)
    reference_shot = stable_shot(page, output)
    page.evaluate("() => { document.getElementById('output').textContent = ''; }")
    blank_shot = stable_shot(page, output)
    same = pixel_diff(page, streamed_shot, reference_shot)
    ink = pixel_diff(page, streamed_shot, blank_shot)
    print(f"\npixels: reply vs blank {ink}, reply vs reference {same}")
    assert ink["size_equal"] and ink["differing"] > 500, ink  # the reply is visibly drawn
    assert same["size_equal"] and same["differing"] <= same["total"] // 200, same
    assert pixel_diff(page, blank_shot, empty_shot)["differing"] <= same["total"] // 200
    page.close()


def test_web_page_cancel_button(serve_double, browser) -> None:
    from server_double import DoubleRuntime

    rs = serve_double(DoubleRuntime(step_s=0.02))
    page = browser.new_page()
    page.goto(rs.base + "/")
    page.fill("#max_tokens", "2000")
    page.click("#send")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('streaming')",
                           timeout=10_000)
    page.click("#cancel")
    page.wait_for_function("document.getElementById('status').textContent.includes('CANCELLED')",
                           timeout=5_000)
    assert page.locator("#send").is_enabled()
    page.close()

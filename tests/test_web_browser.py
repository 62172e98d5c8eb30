"""The web app and the report end to end in headless Chromium (Debian's, driven by Playwright).

The app runs in-process (uvicorn in a thread, on a free loopback port) on the shared
``tiny_noisy_synthbirds`` session. Every step's screenshot must not be blank, the page must
log no console error, and every request it makes must stay on 127.0.0.1 (or be a data: URI).
Skips only where Chromium or Playwright is not installed (``.ci/run`` installs both).
"""
from __future__ import annotations

import io
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip("Chromium is not installed (apt-get install chromium chromium-driver; .ci/run does it)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright's Python package is not installed (pip install playwright)")
uvicorn = pytest.importorskip("uvicorn")

from saywhy.web.app import create_app  # noqa: E402
from saywhy.web.media import MediaStore  # noqa: E402
from saywhy.web.views import Site  # noqa: E402

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def server(tiny_noisy_synthbirds):
    bench = tiny_noisy_synthbirds
    site = Site(bench["session"], bench["dataset"], MediaStore(), eval_path=bench["base"] / "no_eval")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(site), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", site
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


class Watched:
    """A page whose console errors and requests off the machine are recorded (and refused)."""

    def __init__(self, browser, allowed: tuple[str, ...]):
        self.context = browser.new_context(viewport={"width": 1100, "height": 800})
        self.errors, self.off_machine, self.requests = [], [], []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.allowed = allowed

    def _route(self, route):
        url = route.request.url
        if url.startswith(self.allowed):
            route.continue_()
        else:
            self.off_machine.append(url)
            route.abort()

    def shot(self) -> None:
        """The page as it is now must not be blank (grey-level variance of the screenshot)."""
        picture = np.asarray(Image.open(io.BytesIO(self.page.screenshot())).convert("L"), np.float64)
        assert picture.var() > 100, f"blank screenshot of {self.page.url}"

    def close(self) -> None:
        self.context.close()
        assert self.errors == [], self.errors
        assert self.off_machine == [], self.off_machine
        assert all(u.startswith(self.allowed) for u in self.requests)


@pytest.fixture
def watched(browser, server):
    base, _ = server
    w = Watched(browser, (base + "/", "data:"))
    yield w
    w.close()


def _png(path: Path) -> bytes:
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def test_upload_explain_heatmap_and_contrast(server, watched):
    base, site = server
    page = watched.page
    record = site.test[0]
    page.goto(base + "/explain")
    watched.shot()
    page.set_input_files("form.upload input[type=file]",
                         {"name": "bird.png", "mimeType": "image/png", "buffer": _png(record.path)})
    page.click("form.upload button[type=submit]")
    page.wait_for_selector("p.sentence")
    image = Image.open(record.path).convert("RGB")
    expected = site.session.explain(image)[0]
    assert page.inner_text("p.sentence") == expected.sentence
    assert page.inner_text(".predicted") == expected.class_name
    watched.shot()

    # an attribute's heatmap, by click and by keyboard
    buttons = page.locator("button.attribute")
    assert buttons.count() == len(expected.attributes) >= 2
    before = page.get_attribute("img.heatmap", "src")
    buttons.nth(1).click()
    after = page.get_attribute("img.heatmap", "src")
    assert after != before and page.inner_text(".heatmap-name") == expected.attributes[1][0]
    assert page.request.get(base + after).body() != page.request.get(base + before).body()
    assert buttons.nth(1).get_attribute("aria-pressed") == "true"
    buttons.nth(0).focus()
    assert page.get_attribute("img.heatmap", "src") == before
    watched.shot()

    # why not another class?
    other = (expected.class_index + 1) % len(site.explainer.class_names_)
    page.select_option("#other", str(other))
    page.click("form.contrast-form button[type=submit]")
    page.wait_for_selector("p.contrast-sentence")
    assert page.inner_text("p.contrast-sentence") == site.session.contrast(image, other).sentence
    assert f"other={other}" in page.url  # a stable URL: the view can be bookmarked
    watched.shot()


def test_search_an_attribute_and_see_ranked_images(server, watched):
    base, site = server
    page = watched.page
    attribute = site.explainer.describe(0).attributes[0][0]
    page.goto(base + "/search")
    page.fill("#q", attribute)
    page.press("#q", "Enter")
    page.wait_for_selector("li.hit")
    expected = site.session.search([attribute], site.test, top=12)
    names = page.locator("li.hit figure.thumb figcaption .small").all_inner_texts()
    assert names == [Path(h.path).name for h in expected.hits]
    assert page.locator("li.hit .hit-maps img").count() == len(expected.hits)
    watched.shot()


def test_open_a_misclassified_image_from_the_debug_view(server, watched):
    base, site = server
    page = watched.page
    page.goto(base + "/debug")
    watched.shot()
    failure = site.debug_report().failures[0]
    page.click("a.open-failure >> nth=0")
    page.wait_for_selector("p.contrast-sentence")
    assert page.inner_text(".predicted") == failure.predicted_class
    assert page.inner_text("p.contrast-sentence") == failure.contrast
    assert page.locator(".wrong").count() == 1
    watched.shot()


def test_the_report_opens_offline(tiny_noisy_synthbirds, browser, tmp_path):
    from saywhy.web.report import build_report, write_report

    bench = tiny_noisy_synthbirds
    html, _ = build_report(bench["session"], bench["dataset"], n_images=3, n_classes=2, n_searches=2)
    out = write_report(html, tmp_path / "report.html")
    w = Watched(browser, (out.as_uri(), "data:"))
    w.page.goto(out.as_uri())
    w.shot()
    card = w.page.locator("details[open] article.explain")
    before = card.locator("img.heatmap").get_attribute("src")
    buttons = card.locator("button.attribute")
    other = next(i for i in range(buttons.count()) if buttons.nth(i).get_attribute("data-heatmap") != before)
    buttons.nth(other).click()
    assert card.locator("img.heatmap").get_attribute("src") == buttons.nth(other).get_attribute("data-heatmap") != before
    w.close()


def test_paste_an_image_and_reach_the_attributes_by_keyboard(server, watched):
    import base64

    base, site = server
    page = watched.page
    record = site.test[5]
    page.goto(base + "/explain")
    encoded = base64.b64encode(_png(record.path)).decode("ascii")
    with page.expect_navigation():
        page.evaluate("""(data) => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "pasted.png", {type: "image/png"}));
            document.dispatchEvent(new ClipboardEvent("paste", {clipboardData: transfer}));
        }""", encoded)
    page.wait_for_selector("p.sentence")
    expected = site.session.explain(Image.open(record.path).convert("RGB"))[0]
    assert page.inner_text("p.sentence") == expected.sentence
    for _ in range(60):  # Tab through the page until an attribute button has the focus
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.classList.contains('attribute')"):
            break
    else:
        pytest.fail("no attribute button is reachable with Tab")
    for _ in range(len(expected.attributes) - 1):
        page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.dataset.heatmap")
    assert page.get_attribute("img.heatmap", "src") == focused
    watched.shot()

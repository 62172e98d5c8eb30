"""``saywhy report`` for synthbirds and cub50 opened in headless Chromium, and the screenshots in docs/.

For each dataset: build the report with the command line (timed), open it in Debian's
Chromium through Playwright with no network (every request other than the file itself and
its data: URIs is aborted and counted), and record console errors, size and load time. Then
``saywhy serve`` on the synthbirds demo (in-process, loopback) for the app's screenshots.
Writes benchmarks/results/web_reports.json and docs/{app_explain,app_search,app_debug,
report_synthbirds,report_cub50}.png. cub50 is skipped, saying so, where it is absent.

    PYTHONPATH=src python benchmarks/web_reports.py
"""
from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SYNTH = Path("/work/bench_home/explainers/synthbirds-2fb845855c72")
CUB50 = Path(os.environ.get("SAYWHY_CUB50", "/work/shared/data/cub50"))
REPORTS = {
    "synthbirds": ["--home", "/work/bench_home/web", "report", "--explainer", str(SYNTH)],
    "cub50": ["--home", "/work/bench_home", "report", "--explainer", "/work/bench/exp", "--model", "/work/bench/ckpt",
              "--root", str(CUB50 / "CUB_200_2011")],
}
OUT = Path("/tmp/saywhy_web_reports")


def small_png(png: bytes, path: Path, limit: int = 300_000) -> int:
    """Save a screenshot as a palette PNG (a few hundred KB at most)."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    for colours in (256, 128, 64):
        buffer = io.BytesIO()
        image.quantize(colours, method=Image.Quantize.MEDIANCUT).save(buffer, format="PNG", optimize=True)
        if buffer.tell() < limit:
            break
    path.write_bytes(buffer.getvalue())
    return buffer.tell()


def open_watched(browser, url: str, allowed: tuple[str, ...]):
    context = browser.new_context(viewport={"width": 1200, "height": 820})
    log = {"console_errors": [], "blocked": [], "requests": 0}

    def route(r):
        log["requests"] += 1
        if r.request.url.startswith(allowed):
            r.continue_()
        else:
            log["blocked"].append(r.request.url)
            r.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("console", lambda m: log["console_errors"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: log["console_errors"].append(str(e)))
    started = time.perf_counter()
    page.goto(url, wait_until="networkidle")
    log["load_s"] = round(time.perf_counter() - started, 2)
    settle(page)
    return context, page, log


def settle(page) -> None:
    """Wait until every picture in view has loaded (lazy ones load once laid out)."""
    page.wait_for_function("""() => Array.from(document.images).every(i => {
        const r = i.getBoundingClientRect();
        return r.top > innerHeight || r.bottom < 0 || (i.complete && i.naturalWidth > 0); })""", timeout=30000)


def reports(browser) -> dict:
    results = {}
    OUT.mkdir(exist_ok=True)
    for name, command in REPORTS.items():
        if name == "cub50" and not (CUB50 / "CUB_200_2011" / "images.txt").is_file():
            results[name] = {"skipped": f"cub50 not found at {CUB50}"}
            continue
        out = OUT / f"{name}.html"
        started = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "saywhy", "--quiet", *command, "--out", str(out)],
                             env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"},
                             capture_output=True, text=True, timeout=1800)
        build = time.perf_counter() - started
        if run.returncode:
            raise SystemExit(f"saywhy report for {name} failed: {run.stderr.strip()}")
        context, page, log = open_watched(browser, out.as_uri(), (out.as_uri(), "data:"))
        card = page.locator("details[open] article.explain")
        buttons = card.locator("button.attribute")
        if buttons.count() > 1:
            buttons.nth(1).click()
        page.mouse.move(0, 0)
        page.evaluate("window.scrollTo(0, 0)")
        settle(page)
        shot = small_png(page.screenshot(), DOCS / f"report_{name}.png")
        context.close()
        results[name] = {"build_s": round(build, 1), "size_mb": round(out.stat().st_size / 2**20, 2),
                         "summary": run.stdout.strip().splitlines(), "screenshot_bytes": shot, **log}
    return results


def app(browser) -> dict:
    import torch
    import uvicorn

    from saywhy.data.cub import read_cub
    from saywhy.explain.explainer import Explainer
    from saywhy.model.feature_cache import FeatureCache
    from saywhy.pipeline import ExplainerSession
    from saywhy.web.app import create_app
    from saywhy.web.media import MediaStore
    from saywhy.web.views import Site
    from saywhy.workspace import Workspace

    torch.set_num_threads(1)
    explainer = Explainer.load(SYNTH)
    cache = FeatureCache(Workspace(Path("/work/bench_home/web")).feature_cache)
    session = ExplainerSession.from_checkpoint(explainer, feature_cache=cache)
    dataset = read_cub(explainer.metadata_["dataset_root"])
    site = Site(session, dataset, MediaStore(), eval_path=ROOT / "benchmarks" / "results")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(create_app(site), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    failure = site.debug_report().failures[0]
    record = site.by_path[failure.path]
    attribute = explainer.describe(0).attributes[0][0]
    views = {"app_explain": f"/explain?image={record.image_id}&other={failure.true_index}",
             "app_search": f"/search?q={attribute.replace(' ', '+')}", "app_debug": "/debug"}
    results = {}
    for name, path in views.items():
        context, page, log = open_watched(browser, base + path, (base + "/", "data:"))
        if name == "app_explain":
            page.locator("button.attribute").nth(1).click()
            page.mouse.move(0, 0)
            page.evaluate("window.scrollTo(0, 0)")
            settle(page)
        results[name] = {"url": path, "screenshot_bytes": small_png(page.screenshot(), DOCS / f"{name}.png"), **log}
        context.close()
    server.should_exit = True
    thread.join(10)
    return results


def main() -> None:
    from playwright.sync_api import sync_playwright

    DOCS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        result = {"reports": reports(browser), "app": app(browser)}
        browser.close()
    out = ROOT / "benchmarks" / "results" / "web_reports.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    bad = [(k, v) for group in result.values() for k, v in group.items()
           if v.get("console_errors") or v.get("blocked")]
    if bad:
        raise SystemExit(f"console errors or requests off the machine: {bad}")


if __name__ == "__main__":
    main()

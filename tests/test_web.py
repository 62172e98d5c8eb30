"""The web app and the report without a browser: every view, upload limits, names from requests, the report file.

Driven through Starlette's TestClient on the shared ``tiny_noisy_synthbirds`` session, so the
whole file costs seconds. The browser tests are in test_web_browser.py.
"""
from __future__ import annotations

import ast
import io
import re
import struct
import threading
import zlib
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("starlette")
pytest.importorskip("jinja2")

from starlette.testclient import TestClient  # noqa: E402

from saywhy.web.app import create_app  # noqa: E402
from saywhy.web.media import MediaStore  # noqa: E402
from saywhy.web.report import MARKER, build_report, write_report  # noqa: E402
from saywhy.web.views import Site  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src" / "saywhy"
LIMIT = 200_000  # bytes: small, so that an oversized upload is cheap to make


@pytest.fixture(scope="module")
def site(tiny_noisy_synthbirds, tmp_path_factory):
    bench = tiny_noisy_synthbirds
    return Site(bench["session"], bench["dataset"], MediaStore(), eval_path=tmp_path_factory.mktemp("no_eval"))


@pytest.fixture(scope="module")
def client(site):
    return TestClient(create_app(site, max_upload_bytes=LIMIT), follow_redirects=False)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _error_line(html: str) -> str:
    found = re.search(r'<p class="error" role="alert">(.*?)</p>', html, re.S)
    assert found, "the page shows no error line"
    return found.group(1)


def _bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header announcing width x height pixels with almost no data (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# ----- the views ----------------------------------------------------------------------------------
def test_explaining_a_dataset_image_shows_the_sessions_sentence_and_its_heatmaps(site, client):
    record = site.test[0]
    expected = site.session.explain(record)[0]
    page = client.get(f"/explain?image={record.image_id}")
    assert page.status_code == 200
    assert f'<p class="sentence">{expected.sentence}</p>'.replace("'", "&#39;") in page.text
    buttons = re.findall(r'data-heatmap="(/media/[0-9a-f]{24})" data-name="([^"]+)"', page.text)
    assert [name for _, name in buttons] == [t for t, _ in expected.attributes]
    for url, _ in buttons:
        picture = client.get(url)
        assert picture.status_code == 200 and picture.headers["content-type"] == "image/jpeg"
    assert len({url for url, _ in buttons}) == len(buttons)  # one heatmap per attribute, each its own


def test_the_contrast_names_both_classes_and_matches_the_session(site, client):
    record = site.test[0]
    mine = site.session.explain(record)[0].class_index
    other = (mine + 1) % len(site.explainer.class_names_)
    expected = site.session.contrast(record, other)
    page = client.get(f"/explain?image={record.image_id}&other={other}")
    assert page.status_code == 200
    assert expected.sentence.replace("'", "&#39;") in page.text
    assert page.text.count('class="side"') == 2


def test_any_vocabulary_attribute_can_be_grounded_by_url(site, client):
    record, attribute = site.test[1], site.explainer.vocabulary_[0]
    page = client.get("/explain", params={"image": record.image_id, "attribute": attribute})
    assert page.status_code == 200 and f'heatmap of <b class="heatmap-name">{attribute}</b>' in page.text


@pytest.mark.parametrize("url, expected", [
    ("/browse", "Test images"), ("/browse?class=0", "every image labelled so"), ("/classes", "class-list"),
    ("/classes?class=1", "Figure 5"), ("/debug", "class=\"summary\""), ("/evaluation", "No 'saywhy evaluate'"),
    ("/search", "Search by attributes"),
])
def test_every_view_renders(client, url, expected):
    page = client.get(url)
    assert page.status_code == 200, _error_line(page.text)
    assert expected in page.text


def test_the_class_view_describes_the_class_with_eq_7_8(site, client):
    description = site.explainer.describe(2)
    page = client.get("/classes?class=2")
    assert description.sentence.replace("'", "&#39;") in page.text
    assert page.text.count('class="filter"') == 3


def test_search_ranks_the_images_as_the_session_does(site, client):
    attribute = site.explainer.describe(0).attributes[0][0]
    expected = site.session.search([attribute], site.test, top=12)
    page = client.get("/search", params={"q": attribute})
    shown = re.findall(r'<li class="hit">.*?title="explain ([^"]+)"', page.text, re.S)
    assert shown == [Path(h.path).name for h in expected.hits]
    assert page.text.count(f'alt="heatmap of {attribute}"') == len(expected.hits)


def test_the_debug_view_lists_every_failure_with_a_link_to_its_contrast(site, client):
    report = site.debug_report()
    page = client.get("/debug")
    links = re.findall(r'class="open-failure" href="([^"]+)"', page.text)
    assert len(links) == min(20, report.n_failures) and report.n_failures > 0
    assert all(re.fullmatch(r"/explain\?image=\d+&amp;other=\d+", link) for link in links)


def test_random_redirects_to_a_test_image(site, client):
    answer = client.get("/random")
    assert answer.status_code == 303
    image = int(re.fullmatch(r"/explain\?image=(\d+)", answer.headers["location"]).group(1))
    assert image in {r.image_id for r in site.test}


def test_the_evaluation_view_shows_the_tables_of_a_matching_run(site, tiny_noisy_synthbirds, tmp_path):
    import json

    result = json.loads((Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "synthbirds_eval.json").read_text())
    result.update(dataset=str(site.dataset.root), explainer_config=site.explainer.config.__dict__)
    (tmp_path / "tiny_eval.json").write_text(json.dumps(result))
    other = Site(site.session, site.dataset, MediaStore(), eval_path=tmp_path)
    page = TestClient(create_app(other)).get("/evaluation")
    assert "Table 1, attribute grounding PCK" in page.text and page.text.count("<table>") >= 4


def test_an_unreadable_evaluation_file_is_one_line(site, tmp_path):
    (tmp_path / "old_eval.json").write_text('{"test_images": 3}')
    other = Site(site.session, site.dataset, MediaStore(), eval_path=tmp_path / "old_eval.json")
    page = TestClient(create_app(other)).get("/evaluation")
    assert page.status_code == 400 and "run &#39;saywhy evaluate&#39; again" in _error_line(page.text)


# ----- uploads ------------------------------------------------------------------------------------
def test_an_uploaded_image_is_explained_as_the_session_explains_it(site, client):
    image = Image.open(site.test[2].path).convert("RGB")
    answer = client.post("/upload", files={"file": ("bird.png", _png(image), "image/png")})
    assert answer.status_code == 303
    page = client.get(answer.headers["location"])
    expected = site.session.explain(image)[0]
    assert expected.sentence.replace("'", "&#39;") in page.text


def test_the_api_explains_posted_bytes(site, client):
    image = Image.open(site.test[3].path).convert("RGB")
    answer = client.post("/api/explain", content=_png(image))
    assert answer.status_code == 200
    assert answer.json()["sentence"] == site.session.explain(image)[0].sentence


def test_an_oversized_upload_is_refused_before_it_is_read(client):
    answer = client.post("/upload", files={"file": ("big.png", b"\0" * (LIMIT * 2), "image/png")})
    assert answer.status_code == 413
    assert "larger than the limit" in _error_line(answer.text)
    assert client.post("/api/explain", content=b"\0" * (LIMIT * 2)).json()["error"].startswith("the upload is larger")


def test_an_oversized_upload_without_a_length_is_cut_off_while_it_streams(client):
    chunks = (b"\0" * LIMIT for _ in range(3))  # chunked: no Content-Length to refuse it by
    answer = client.post("/api/explain", content=chunks)
    assert answer.status_code == 413 and answer.json()["error"].startswith("the upload is larger than the limit")


def test_a_file_that_is_not_an_image_is_refused_whatever_its_name_says(client):
    answer = client.post("/upload", files={"file": ("bird.png", b"#!/bin/sh\necho hello\n", "image/png")})
    assert answer.status_code == 400
    assert "not an image" in _error_line(answer.text)


def test_a_decompression_bomb_is_refused_from_its_header(client):
    answer = client.post("/upload", files={"file": ("bomb.png", _bomb_png(), "image/png")})
    assert answer.status_code == 413
    line = _error_line(answer.text)
    assert "too large to open safely" in line or "100000 x 100000 pixels, more than the limit" in line


def test_the_pixel_limit_is_saywhys(client, monkeypatch):
    monkeypatch.setenv("SAYWHY_MAX_PIXELS", "100")
    answer = client.post("/upload", files={"file": ("small.png", _png(Image.new("RGB", (20, 20))), "image/png")})
    assert answer.status_code == 413 and "SAYWHY_MAX_PIXELS" in _error_line(answer.text)


# ----- names taken from the request -----------------------------------------------------------------
TRAVERSALS = ["../../../../etc/passwd", "..%2F..%2F..%2Fetc%2Fpasswd", "/etc/passwd", "....//....//etc/passwd"]


@pytest.mark.parametrize("bad", TRAVERSALS)
@pytest.mark.parametrize("route", ["/explain?image={}", "/explain?upload={}", "/explain?image=1&other={}",
                                   "/explain?image=1&attribute={}", "/browse?class={}", "/classes?class={}",
                                   "/search?q={}", "/debug?page={}", "/browse?page={}", "/api/explain?image={}"])
def test_path_traversal_in_a_query_is_refused_with_one_line(client, route, bad):
    answer = client.get(route.format(bad))
    assert 400 <= answer.status_code < 500
    assert "root:" not in answer.text and "Traceback" not in answer.text
    line = answer.json()["error"] if route.startswith("/api/") else _error_line(answer.text)
    assert "\n" not in line and len(line) < 400


@pytest.mark.parametrize("path", ["/media/../../../../etc/passwd", "/media/..%2F..%2F..%2Fetc%2Fpasswd",
                                  "/media/" + "0" * 24, "/static/../../../../etc/passwd",
                                  "/static/..%2F..%2F..%2F..%2Fetc%2Fpasswd", "/static/../views.py",
                                  "/static/%2e%2e/views.py"])
def test_path_traversal_in_a_path_is_refused(client, path):
    answer = client.get(path)
    assert answer.status_code == 404
    assert "root:" not in answer.text and "import" not in answer.text


def test_a_known_image_id_with_junk_is_not_found(client):
    assert client.get("/explain?image=999999").status_code == 404
    assert client.get("/explain?upload=" + "f" * 16).status_code == 404


# ----- serving ----------------------------------------------------------------------------------
def test_concurrent_requests_take_turns_in_the_one_model(site, client):
    record = site.test[4]
    expected = site.session.explain(record)[0].sentence
    answers, entered, inside = [], [0], [0]
    real = site.session.explain

    def counting(*args, **kwargs):  # how many threads are in the model at once
        inside[0] += 1
        entered[0] = max(entered[0], inside[0])
        try:
            return real(*args, **kwargs)
        finally:
            inside[0] -= 1

    site.session.explain = counting
    try:
        threads = [threading.Thread(target=lambda: answers.append(client.get(f"/api/explain?image={record.image_id}")))
                   for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        del site.session.explain
    assert [a.json()["sentence"] for a in answers] == [expected] * 8
    assert entered[0] == 1


def test_serve_listens_on_loopback_by_default():
    from saywhy.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port) == ("127.0.0.1", 8000)


def test_pages_forbid_fetching_from_elsewhere(client):
    policy = client.get("/explain").headers["content-security-policy"]
    assert "default-src 'self'" in policy and "http" not in policy


def test_the_web_layer_is_a_leaf():
    """web/ uses the library, never the CLI; it runs no network of its own (torch stays in the session)."""
    for path in sorted((SRC / "web").rglob("*.py")):
        imports = {n.module for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ImportFrom) and n.module}
        imports |= {a.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Import) for a in n.names}
        assert not any(name.startswith(("saywhy.cli", "torch")) for name in imports), path


# ----- the report -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def report_html(tiny_noisy_synthbirds):
    bench = tiny_noisy_synthbirds
    html, counts = build_report(bench["session"], bench["dataset"], n_images=4, n_classes=2, n_searches=2)
    assert counts["explained"] == 4 and counts["classes"] == 2 and counts["searches"] == 2
    return html


def test_the_report_is_self_contained(report_html):
    assert MARKER in report_html[:4096]
    sources = re.findall(r'(?:src|href)="([^"#][^"]*)"', report_html)
    assert sources and all(s.startswith("data:image/") for s in sources)
    assert "<link" not in report_html and "Content-Security-Policy" in report_html


def test_the_report_explains_the_failures_first(tiny_noisy_synthbirds, report_html):
    bench = tiny_noisy_synthbirds
    from saywhy.apps.debugging import debug_network

    first = debug_network(bench["session"], bench["dataset"]).failures[0]
    summaries = re.findall(r"<summary>([^<]+)</summary>", report_html)
    assert summaries[0].startswith(Path(first.path).name) and "wrong, labelled" in summaries[0]


def test_the_report_replaces_only_a_report(tmp_path, report_html):
    from saywhy.errors import SaywhyError

    out = write_report(report_html, tmp_path / "r.html")
    assert out.read_text() == report_html
    write_report(report_html.replace("Explain", "Explain!", 1), out)  # its own report: replaced
    assert "Explain!" in out.read_text()
    mine = tmp_path / "notes.html"
    mine.write_text("<html>my notes</html>")
    with pytest.raises(SaywhyError, match="saywhy did not write"):
        write_report(report_html, mine)
    assert mine.read_text() == "<html>my notes</html>"
    with pytest.raises(SaywhyError, match="ending in .html"):
        write_report(report_html, tmp_path / "r.txt")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_the_report_command_writes_the_file(tiny_noisy_synthbirds, tmp_path, capsys):
    from saywhy.cli import main

    bench = tiny_noisy_synthbirds
    out = tmp_path / "report.html"
    status = main(["--home", str(bench["home"]), "report", "--explainer", str(bench["exp"]), "--root", str(bench["root"]),
                   "--out", str(out), "--images", "2", "--classes", "1", "--searches", "1", "--failures", "1", "--quiet"])
    assert status == 0, capsys.readouterr().err
    assert MARKER in out.read_text()[:4096] and "wrote" in capsys.readouterr().out


def test_the_serve_command_serves_its_explainer_on_loopback(tiny_noisy_synthbirds, monkeypatch, capsys):
    """``saywhy serve`` end to end but for the socket: uvicorn is handed the app, on 127.0.0.1."""
    import uvicorn

    from saywhy.cli import main

    bench, served = tiny_noisy_synthbirds, {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.update(app=app, **options))
    status = main(["--home", str(bench["home"]), "--quiet", "serve", "--explainer", str(bench["exp"]),
                   "--root", str(bench["root"]), "--port", "8765"])
    assert status == 0, capsys.readouterr().err
    assert (served["host"], served["port"]) == ("127.0.0.1", 8765)
    assert "http://127.0.0.1:8765/" in capsys.readouterr().out
    page = TestClient(served["app"]).get("/explain?image=" + str(bench["dataset"].split(train=False)[0].image_id))
    assert page.status_code == 200 and '<p class="sentence">' in page.text

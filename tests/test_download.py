"""'saywhy data cub' against small local archives: never the network."""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import tarfile
import urllib.error
from pathlib import Path

import pytest

from saywhy.data import download
from saywhy.data.cub import read_cub
from saywhy.data.download import Archive, download_cub
from saywhy.errors import SaywhyError


def _add_tree(tar: tarfile.TarFile, folder: Path, arcname: str) -> None:
    tar.add(folder, arcname=arcname)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def archives(tiny_cub: Path, tmp_path: Path) -> dict:
    """A fake CUB_200_2011.tgz and cvpr2016_cub.tar.gz in the official archives' layout."""
    folder = tmp_path / "archives"
    folder.mkdir()
    cub = folder / "CUB_200_2011.tgz"
    with tarfile.open(cub, "w:gz") as tar:
        _add_tree(tar, tiny_cub / "CUB_200_2011", "CUB_200_2011")
        _add_bytes(tar, "attributes.txt", b"1 has_bill_shape::curved\n")
    captions = folder / "cvpr2016_cub.tar.gz"
    with tarfile.open(captions, "w:gz") as tar:
        _add_tree(tar, tiny_cub / "text_c10", "cvpr2016_cub/text_c10")
        _add_bytes(tar, "cvpr2016_cub/images/huge_features.t7", b"x" * 1000)  # not unpacked
    sources = (
        Archive("CUB_200_2011.tgz", (cub.as_uri(),), ("CUB_200_2011", "attributes.txt"),
                md5=hashlib.md5(cub.read_bytes()).hexdigest()),
        Archive("cvpr2016_cub.tar.gz", (captions.as_uri(),), ("text_c10",),
                sha256=hashlib.sha256(captions.read_bytes()).hexdigest()),
    )
    return {"folder": folder, "cub": cub, "captions": captions, "sources": sources}


def _leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir() if p.name.startswith(".unpack-") or p.name.endswith(".part"))


def test_download_verifies_and_unpacks_into_the_layout_read_cub_reads(archives, tmp_path):
    dest = tmp_path / "dest"
    report = download_cub(dest, sources=archives["sources"], progress=False)
    dataset = read_cub(dest)
    assert len(dataset.records) == 4 and dataset.skipped["no caption file"] == 1
    assert (dest / "attributes.txt").is_file() and (dest / "text_c10").is_dir()
    assert not (dest / "images").exists() and not list(dest.rglob("huge_features.t7"))
    assert sorted(p.name for p in dest.iterdir()) == ["CUB_200_2011", "attributes.txt", "text_c10"]  # archives removed
    assert [name for name, _ in report.steps] == ["CUB_200_2011.tgz", "cvpr2016_cub.tar.gz"]
    assert hashlib.sha256(archives["captions"].read_bytes()).hexdigest() in report.steps[1][1]


def test_second_run_fetches_nothing(archives, tmp_path):
    dest = tmp_path / "dest"
    download_cub(dest, sources=archives["sources"], progress=False)

    def no_network(*args, **kwargs):
        raise AssertionError("the network was used")

    report = download_cub(dest, sources=archives["sources"], progress=False, opener=no_network)
    assert all("already there" in what for _, what in report.steps)


def test_wrong_checksum_removes_the_download_and_unpacks_nothing(archives, tmp_path):
    dest = tmp_path / "dest"
    bad = dataclasses.replace(archives["sources"][0], md5="0" * 32)
    with pytest.raises(SaywhyError, match="damaged .*MD5 .*expected 0{32}.* was removed") as error:
        download_cub(dest, sources=[bad], progress=False)
    assert "\n" not in str(error.value)
    assert sorted(p.name for p in dest.iterdir()) == []


def test_offline_is_one_line_saying_where_to_put_the_archives(archives, tmp_path):
    def offline(request, timeout=None):
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))

    dest = tmp_path / "dest"
    with pytest.raises(SaywhyError) as error:
        download_cub(dest, sources=archives["sources"], progress=False, opener=offline)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("could not download CUB_200_2011.tgz (")
    assert "Temporary failure in name resolution" in message and "--archives DIR" in message
    assert list(dest.iterdir()) == []


def test_archives_folder_is_used_without_the_network_and_left_in_place(archives, tmp_path):
    def no_network(*args, **kwargs):
        raise AssertionError("the network was used")

    dest = tmp_path / "dest"
    download_cub(dest, archives=archives["folder"], sources=archives["sources"], progress=False, opener=no_network)
    assert len(read_cub(dest).records) == 4
    assert archives["cub"].is_file() and archives["captions"].is_file()


def test_a_wrong_file_in_archives_is_refused_and_kept(archives, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "CUB_200_2011.tgz").write_bytes(b"<html>quota exceeded</html>")
    with pytest.raises(SaywhyError, match="is not the expected CUB_200_2011.tgz .*MD5"):
        download_cub(tmp_path / "dest", archives=folder, sources=archives["sources"], progress=False)
    assert (folder / "CUB_200_2011.tgz").is_file()


class _Response(io.BytesIO):
    def __init__(self, data: bytes, status: int = 200, content_type: str = "application/x-gzip"):
        super().__init__(data)
        self.status = status
        self.headers = {"Content-Type": content_type, "Content-Length": str(len(data))}


def test_interrupted_download_resumes_with_a_range_request(archives, tmp_path):
    data = archives["cub"].read_bytes()
    dest = tmp_path / "dest"
    dest.mkdir()
    half = len(data) // 2
    (dest / "CUB_200_2011.tgz.part").write_bytes(data[:half])
    asked = []

    def server(request, timeout=None):
        asked.append(request.get_header("Range"))
        start = int(request.get_header("Range")[len("bytes="):-1]) if request.get_header("Range") else 0
        return _Response(data[start:], status=206 if start else 200)

    download_cub(dest, sources=archives["sources"][:1], progress=False, opener=server)
    assert asked == [f"bytes={half}-"]
    assert len(read_cub(dest).records) == 4


def test_a_server_ignoring_range_restarts_the_download(archives, tmp_path):
    data = archives["cub"].read_bytes()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "CUB_200_2011.tgz.part").write_bytes(b"stale bytes from another file")
    download_cub(dest, sources=archives["sources"][:1], progress=False, opener=lambda request, timeout=None: _Response(data))
    assert len(read_cub(dest).records) == 4


def test_a_web_page_instead_of_the_archive_tries_the_next_address(archives, tmp_path):
    data = archives["cub"].read_bytes()
    source = dataclasses.replace(archives["sources"][0], urls=("https://first.example/x", "https://second.example/x"))
    asked = []

    def server(request, timeout=None):
        asked.append(request.full_url)
        if "first" in request.full_url:
            return _Response(b"<html>virus scan warning</html>", content_type="text/html; charset=utf-8")
        return _Response(data)

    download_cub(tmp_path / "dest", sources=[source], progress=False, opener=server)
    assert asked == ["https://first.example/x", "https://second.example/x"]


def test_members_outside_the_destination_are_never_extracted(tiny_cub, tmp_path):
    evil = tmp_path / "evil.tgz"
    with tarfile.open(evil, "w:gz") as tar:
        _add_tree(tar, tiny_cub / "CUB_200_2011", "CUB_200_2011")
        _add_bytes(tar, "../CUB_200_2011/escaped.txt", b"outside")
        _add_bytes(tar, f"{tmp_path}/abs/CUB_200_2011/absolute.txt", b"outside")
    dest = tmp_path / "dest"
    source = Archive("evil.tgz", (evil.as_uri(),), ("CUB_200_2011",))
    download_cub(dest, sources=[source], progress=False)
    assert (dest / "CUB_200_2011" / "images.txt").is_file()
    assert not list(tmp_path.rglob("escaped.txt")) and not list(tmp_path.rglob("absolute.txt"))


def test_an_archive_without_the_expected_folder_leaves_nothing(tmp_path):
    other = tmp_path / "other.tgz"
    with tarfile.open(other, "w:gz") as tar:
        _add_bytes(tar, "something_else/readme.txt", b"hello")
    dest = tmp_path / "dest"
    with pytest.raises(SaywhyError, match="has no CUB_200_2011 in it"):
        download_cub(dest, sources=[Archive("other.tgz", (other.as_uri(),), ("CUB_200_2011",))], progress=False)
    assert _leftovers(dest) == [] and not (dest / "CUB_200_2011").exists()


def test_data_cub_command_prints_each_step_and_the_next_command(archives, tmp_path, monkeypatch, capsys):
    from saywhy.cli.data import add_data_options, run_data_cub

    monkeypatch.setattr(download, "CUB_ARCHIVE", archives["sources"][0])
    monkeypatch.setattr(download, "CAPTIONS_ARCHIVE", archives["sources"][1])
    parser = argparse.ArgumentParser()
    parser.add_argument("--dest", type=Path, required=True)
    parser.add_argument("--quiet", action="store_true")
    add_data_options(parser)
    run_data_cub(parser.parse_args(["--dest", str(tmp_path / "dest"), "--archives", str(archives["folder"]), "--quiet"]))
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"CUB_200_2011.tgz: unpacked from {archives['cub']}"
    assert out[-1].startswith(f"next: saywhy train --dataset cub --root {tmp_path / 'dest'} --arch efficientnet_lite0")


def test_official_sources_are_https_and_the_cub_checksum_is_pinned():
    assert all(url.startswith("https://") for a in (download.CUB_ARCHIVE, download.CAPTIONS_ARCHIVE) for url in a.urls)
    assert download.CUB_ARCHIVE.md5 == "97eceeb196236b17998738112f37df78"
    assert download.CUB_ARCHIVE.keep[0] == "CUB_200_2011" and download.CAPTIONS_ARCHIVE.keep == ("text_c10",)

"""Fetch CUB-200-2011 and Reed et al.'s captions into the layout ``read_cub`` reads.

``DEST/CUB_200_2011/`` (images, boxes, parts, splits), ``DEST/attributes.txt`` and
``DEST/text_c10/<class>/<image>.txt``. Every step can be interrupted and rerun:

- an archive downloads to ``NAME.part`` (a rerun resumes it with an HTTP Range request),
  is checked against its known checksum, and only then is renamed to ``NAME``;
- it unpacks into a temporary folder inside ``DEST`` whose result folders are renamed
  into place, the required one last, so a folder in ``DEST`` is always complete;
- a folder already in place is not fetched again.

Offline, or where a host refuses, point ``archives`` (``--archives DIR``) at a folder
holding the archives downloaded by hand.
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from saywhy.errors import SaywhyError

log = logging.getLogger(__name__)

CHUNK = 1 << 20


@dataclass(frozen=True)
class Archive:
    """One downloadable archive and what of it ends up in the destination folder."""

    filename: str
    urls: tuple[str, ...]  # tried in order
    keep: tuple[str, ...]  # names moved into DEST (the shallowest match in the archive); the first is required
    md5: str | None = None
    sha256: str | None = None
    home: str = ""  # the page a person downloads it from by hand


# CUB-200-2011 (Wah et al. 2011). Its official home is CaltechDATA record 65de6-vp158, linked
# from https://www.vision.caltech.edu/datasets/cub_200_2011/; the second URL is the original
# Caltech address the dataset was published at. The MD5 is the one torchvision-style loaders
# check (tgz_md5 = '97eceeb196236b17998738112f37df78').
CUB_ARCHIVE = Archive(
    filename="CUB_200_2011.tgz",
    urls=(
        "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1",
        "https://www.vision.caltech.edu/visipedia-data/CUB-200-2011/CUB_200_2011.tgz",
    ),
    keep=("CUB_200_2011", "attributes.txt"),
    md5="97eceeb196236b17998738112f37df78",
    home="https://data.caltech.edu/records/65de6-vp158",
)

# Reed et al. 2016, "Learning Deep Representations of Fine-Grained Visual Descriptions": the
# birds archive linked from https://github.com/reedscot/cvpr2016 (Google Drive file id
# 0B0ywwgffWnLLZW9uVHNjb2JmNlE). Only its text_c10/ folder is unpacked. No checksum is
# published; the SHA-256 of what was downloaded is reported so that it can be pinned.
_REED_DRIVE_ID = "0B0ywwgffWnLLZW9uVHNjb2JmNlE"
CAPTIONS_ARCHIVE = Archive(
    filename="cvpr2016_cub.tar.gz",
    urls=(
        f"https://drive.usercontent.google.com/download?id={_REED_DRIVE_ID}&export=download&confirm=t",
        f"https://drive.google.com/uc?export=download&id={_REED_DRIVE_ID}&confirm=t",
    ),
    keep=("text_c10",),
    home=f"https://drive.google.com/open?id={_REED_DRIVE_ID} (from https://github.com/reedscot/cvpr2016)",
)

Opener = Callable[..., object]  # urllib.request.urlopen's signature: (request, timeout=...) -> response


@dataclass
class DownloadReport:
    """What ``download_cub`` did for each archive, and the root to pass to ``--root``."""

    root: Path
    steps: list[tuple[str, str]] = field(default_factory=list)  # (archive file name, what happened)


def download_cub(
    dest: str | Path,
    archives: str | Path | None = None,
    captions: bool = True,
    keep_archives: bool = False,
    progress: bool = True,
    opener: Opener | None = None,
    sources: Sequence[Archive] | None = None,
) -> DownloadReport:
    """Download (or take from ``archives``), verify and unpack CUB-200-2011 and its captions.

    ``sources`` replaces the two official archives (tests pass local ones); ``opener``
    replaces ``urllib.request.urlopen``.

    >>> report = download_cub("data/cub")                  # doctest: +SKIP
    >>> report.root                                        # doctest: +SKIP
    PosixPath('data/cub')
    """
    dest = Path(dest).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    for stale in dest.glob(".unpack-*"):  # left by a run that was killed while unpacking
        shutil.rmtree(stale, ignore_errors=True)
    if sources is None:
        sources = (CUB_ARCHIVE, CAPTIONS_ARCHIVE) if captions else (CUB_ARCHIVE,)
    report = DownloadReport(root=dest)
    for archive in sources:
        if (dest / archive.keep[0]).exists():
            report.steps.append((archive.filename, f"{dest / archive.keep[0]} already there"))
            continue
        given = Path(archives).expanduser() / archive.filename if archives is not None else None
        if given is not None and given.is_file():
            verify_archive(given, archive, downloaded=False)
            unpack_archive(given, dest, archive)
            report.steps.append((archive.filename, f"unpacked from {given}"))
            continue
        if given is not None:
            log.warning("%s is not in %s: downloading it", archive.filename, archives)
        path, sha256 = fetch_archive(archive, dest, opener=opener, progress=progress)
        unpack_archive(path, dest, archive)
        if not keep_archives:
            path.unlink()
        report.steps.append((archive.filename, f"downloaded and unpacked (SHA-256 {sha256})"))
    return report


def fetch_archive(archive: Archive, folder: Path, opener: Opener | None = None, progress: bool = True) -> tuple[Path, str]:
    """Download ``archive`` into ``folder`` via ``NAME.part``; returns the verified file and its SHA-256."""
    final = folder / archive.filename
    if final.is_file():  # downloaded by an earlier run that stopped before unpacking
        return final, verify_archive(final, archive, downloaded=False)
    part = folder / f"{archive.filename}.part"
    reasons = []
    for url in archive.urls:
        try:
            _download(url, part, opener or urllib.request.urlopen, progress)
            break
        except (urllib.error.URLError, http.client.HTTPException, OSError, _NotAnArchive) as error:
            reasons.append(_reason(error))
            log.info("%s: %s", url, reasons[-1])
    else:
        raise SaywhyError(
            f"could not download {archive.filename} ({reasons[0]}): download it by hand from {archive.home or archive.urls[0]} "
            f"into a folder and pass --archives DIR"
        )
    sha256 = verify_archive(part, archive, downloaded=True)
    os.replace(part, final)
    return final, sha256


def verify_archive(path: Path, archive: Archive, downloaded: bool) -> str:
    """Check the known checksums (and that it is a tar archive at all); returns the SHA-256.

    A bad download is deleted (resuming it would keep the damage); a bad file the
    user supplied is left alone.
    """
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            md5.update(chunk)
            sha256.update(chunk)
    problems = []
    if archive.md5 and md5.hexdigest() != archive.md5:
        problems.append(f"MD5 {md5.hexdigest()}, expected {archive.md5}")
    if archive.sha256 and sha256.hexdigest() != archive.sha256:
        problems.append(f"SHA-256 {sha256.hexdigest()}, expected {archive.sha256}")
    if not problems and not tarfile.is_tarfile(path):
        problems.append("not a tar archive")
    if problems:
        if downloaded:
            path.unlink(missing_ok=True)
            raise SaywhyError(f"the download of {archive.filename} is damaged ({'; '.join(problems)}) and was removed: "
                              "run the command again, or download it by hand and pass --archives DIR")
        raise SaywhyError(f"{path} is not the expected {archive.filename} ({'; '.join(problems)}): "
                          f"replace it with the file from {archive.home or archive.urls[0]}")
    return sha256.hexdigest()


def unpack_archive(path: Path, dest: Path, archive: Archive) -> None:
    """Extract the parts of ``archive`` named in ``keep`` into ``dest``, all or nothing.

    Only regular files and folders under a path part named in ``keep`` are extracted,
    and none that would land outside the temporary folder.
    """
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest))
    try:
        try:
            with tarfile.open(path, "r:*") as tar:
                members = [m for m in tar if _wanted(m, archive.keep)]
                extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(tmp, members=members, **extra)
        except (tarfile.TarError, OSError, EOFError) as error:
            raise SaywhyError(f"cannot unpack {path} ({_reason(error)}): delete it and download it again") from None
        found = {name: _shallowest(tmp, name) for name in archive.keep}
        required = archive.keep[0]
        if found[required] is None:
            raise SaywhyError(f"{path} has no {required} in it: it is not the expected {archive.filename}")
        # Optional parts first, the required one last: its presence means the whole archive is in place.
        for name in [*archive.keep[1:], required]:
            if found[name] is not None and not (dest / name).exists():
                os.replace(found[name], dest / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _NotAnArchive(Exception):
    """The server answered, but with a web page (a login, a quota or a virus-scan notice)."""


def _download(url: str, part: Path, opener: Opener, progress: bool) -> None:
    start = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "saywhy (python urllib)"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        response = opener(urllib.request.Request(url, headers=headers), timeout=60)
    except urllib.error.HTTPError as error:
        if start and error.code == 416:  # nothing left to send: the .part is whole (the checksum decides)
            return
        raise
    with response:
        content_type = response.headers.get("Content-Type", "") or ""
        if content_type.startswith("text/html"):
            raise _NotAnArchive("the server sent a web page instead of the archive")
        status = getattr(response, "status", None)
        if not (start and status == 206):  # the server ignored the Range: start over
            start = 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else None
        with part.open("ab" if start else "wb") as out, tqdm(
            total=total, initial=start, unit="B", unit_scale=True, desc=part.name[:-5], disable=not progress, leave=False
        ) as bar:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                bar.update(len(chunk))


def _wanted(member: tarfile.TarInfo, keep: Sequence[str]) -> bool:
    parts = PurePosixPath(member.name).parts
    safe = not member.name.startswith("/") and ".." not in parts
    return safe and (member.isfile() or member.isdir()) and any(part in keep for part in parts)


def _shallowest(root: Path, name: str) -> Path | None:
    for depth in range(4):
        matches = sorted(root.glob("/".join(["*"] * depth + [name])))
        if matches:
            return matches[0]
    return None


def _reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code}"
    if isinstance(error, urllib.error.URLError):
        return _reason(error.reason) if isinstance(error.reason, BaseException) else str(error.reason)
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}"[:160] if text else type(error).__name__

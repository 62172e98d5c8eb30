"""Text files as people save them: UTF-8, UTF-8 or UTF-16/32 with a byte-order mark, and nothing else.

A file in another encoding (Latin-1, Windows-1252, UTF-16 without a mark) is not guessed
at: reading it with replacement characters would put "bl\ufffde wing" into the
vocabulary without a word. :func:`decode_text` raises :class:`NotUTF8Error` instead, and
each reader decides: a caption file is skipped and counted, a metadata line is skipped and
counted, an attribute file given by the user is a one-line error.
"""
from __future__ import annotations

import codecs
from pathlib import Path

from saywhy.errors import SaywhyError

# longest first: the UTF-32-LE mark begins with the UTF-16-LE one
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


class NotUTF8Error(SaywhyError):
    """A text file that is neither UTF-8 nor marked (BOM) as UTF-16/32."""


def decode_text(data: bytes, name: str | Path = "text") -> str:
    """``data`` as text: by its byte-order mark if it has one, else as strict UTF-8.

    NUL characters are refused too (UTF-16 without a mark decodes as UTF-8 with a NUL in
    every other place).

    >>> decode_text("red crown".encode("utf-16"))
    'red crown'
    >>> try:
    ...     decode_text(b"bl\\xe9 wing", "a.txt")
    ... except NotUTF8Error as error:
    ...     print(error)
    a.txt is not UTF-8 (byte 0xe9 at offset 2): save it as UTF-8
    """
    encoding = next((enc for bom, enc in _BOMS if data.startswith(bom)), "utf-8")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        raise NotUTF8Error(f"{name} is not {encoding.removesuffix('-sig').upper()} (byte 0x{data[error.start]:02x} at "
                           f"offset {error.start}): save it as UTF-8") from None
    if "\x00" in text:
        raise NotUTF8Error(f"{name} holds NUL characters (UTF-16 without a byte-order mark?): save it as UTF-8")
    return text


def read_text(path: str | Path) -> str:
    """A whole file decoded by :func:`decode_text` (OS errors propagate)."""
    return decode_text(Path(path).read_bytes(), path)


def read_lines(path: str | Path) -> tuple[list[str], int]:
    """The file's lines, and how many lines could not be decoded (each left out).

    A whole file in UTF-16/32 with a mark, or in UTF-8, gives every line; otherwise each
    line is decoded as UTF-8 on its own, so one stray Latin-1 byte costs one line, not the file.
    """
    data = Path(path).read_bytes()
    try:
        return decode_text(data, path).splitlines(), 0
    except NotUTF8Error:
        pass
    lines, bad = [], 0
    for raw in data.splitlines():
        try:
            lines.append(decode_text(raw, path))
        except NotUTF8Error:
            bad += 1
    return lines, bad

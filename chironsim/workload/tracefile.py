"""Opening trace files, and turning every way reading one can fail into a located user error.

The readers stream text through ``gzip`` and ``io.TextIOWrapper``, which fail with exceptions
that say nothing about the file or the line (``EOFError`` for a truncated ``.gz``,
``BadGzipFile`` for plain text named ``.gz``, ``zlib.error`` for corrupt compressed data,
``UnicodeDecodeError`` for a byte that is not UTF-8). :func:`read_failure` maps each to a
:class:`TraceFormatError` naming the file and line. The work happens only once a read has
failed, so the readers' loop over good lines stays as fast as before.

Text is decoded in chunks of several kilobytes, so a ``UnicodeDecodeError`` surfaces at the
line the reader was at when the chunk holding the bad byte was decoded — often lines before
the bad one. :func:`first_undecodable_line` rescans the raw bytes to name the right line.
"""

from __future__ import annotations

import csv
import gzip
import zlib
from pathlib import Path
from typing import IO, BinaryIO

from chironsim.errors import TraceFormatError

#: What reading a trace as text can raise besides the readers' own checks.
READ_ERRORS: tuple[type[BaseException], ...] = (
    UnicodeDecodeError, csv.Error, EOFError, OSError, zlib.error,
)

_SHOWN_CHARS = 40


def shown(text: object) -> str:
    """``repr`` of a value for an error message, cut short (a 5,000-digit count stays readable)."""
    quoted = repr(text)
    return quoted if len(quoted) <= _SHOWN_CHARS else f"{quoted[:_SHOWN_CHARS]}… ({len(quoted)} chars)"


def open_text(path: Path) -> IO[str]:
    """Open a trace for reading as text (``.gz`` transparently); BOM stripped, newlines raw."""
    try:
        if path.suffix == ".gz":
            return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
        return open(path, encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise TraceFormatError(path, None, f"cannot open the file ({exc.strerror or exc})") from None


def _open_binary(path: Path) -> BinaryIO:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def first_undecodable_line(path: Path) -> tuple[int, int, int] | None:
    """(line, byte column, byte value) of the first byte of ``path`` that is not UTF-8.

    Decodes the raw bytes block by block (carrying a multi-byte sequence cut by a block
    boundary), counting ``\\n``s, in time linear in the file. A read error ends the scan, not
    the search: a truncated ``.gz`` still yields the bytes before its cut, where the text
    reader met the bad byte. None when the scan finds nothing.
    """
    number, column, carry = 1, 0, b""  # column: bytes of the current line before ``data``
    try:
        with _open_binary(path) as raw:
            while True:
                try:
                    block = raw.read(1 << 16)
                except READ_ERRORS:
                    block = b""
                data = carry + block
                try:
                    data.decode("utf-8")
                    good, carry = len(data), b""
                except UnicodeDecodeError as exc:
                    if block and exc.reason == "unexpected end of data":
                        good, carry = exc.start, data[exc.start:]
                    else:
                        before = data[:exc.start]
                        newline = before.rfind(b"\n")
                        at = exc.start - newline if newline >= 0 else column + exc.start + 1
                        return number + before.count(b"\n"), at, data[exc.start]
                newline = data.rfind(b"\n", 0, good)
                number += data.count(b"\n", 0, good)
                column = good - newline - 1 if newline >= 0 else column + good
                if not block:
                    return None
    except OSError:  # the file cannot be opened any more
        return None


def read_failure(path: Path, line: int | None, exc: BaseException) -> TraceFormatError:
    """The user error for ``exc``, raised while reading line ``line`` (1-based) of ``path``.

    ``line`` is None where the caller reads the file whole and so knows no line.
    """
    if isinstance(exc, UnicodeDecodeError):
        bad = first_undecodable_line(path)
        if bad is not None:
            number, column, byte = bad
            return TraceFormatError(
                path, number, f"not UTF-8 text: byte 0x{byte:02x} at column {column} "
                "(save the file as UTF-8)")
        return TraceFormatError(path, line, f"not UTF-8 text ({exc.reason})")
    if isinstance(exc, gzip.BadGzipFile):
        if str(exc).startswith("Not a gzipped file"):
            if line is None or line <= 1:
                return TraceFormatError(
                    path, None, "not gzip-compressed, though its name ends in .gz "
                    "(compress it, or rename it without .gz)")
            return TraceFormatError(path, line, "bytes that are not gzip data follow the "
                                    "compressed data (two files joined?)")
        return TraceFormatError(path, line, f"the gzip data is corrupt ({exc})")
    if isinstance(exc, EOFError):
        return TraceFormatError(
            path, line, "the gzip data ends early: the file is truncated (cut off while being "
            "written, copied or downloaded)")
    if isinstance(exc, zlib.error):
        return TraceFormatError(path, line, f"the gzip data is corrupt ({exc})")
    if isinstance(exc, csv.Error):
        return TraceFormatError(path, line, f"not readable as CSV ({exc})")
    if isinstance(exc, OSError):
        return TraceFormatError(path, line, f"cannot read the file ({exc.strerror or exc})")
    raise TypeError(f"not a read error: {exc!r}") from exc

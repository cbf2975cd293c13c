"""The agent's log: the deck's line format, and Ruby's ``inspect`` for JSON-ish values.

Each line on stdout is ``#[<pid>] <LEVEL>: <message>``; runit's ``svlogd -tt`` puts the UTC stamp in front,
so ``/var/vcap/bosh/log/current`` reads like the deck (slide 9)::

    2013-06-04_21:54:09.68919 #[584] INFO: Heartbeat sent
"""
from __future__ import annotations

import logging
import sys
import unicodedata
from decimal import Decimal
from typing import Any, TextIO

LOGGER_NAME = "agent"
log = logging.getLogger(LOGGER_NAME)

_LEVELS = {"WARNING": "WARN", "CRITICAL": "FATAL"}


class DeckFormatter(logging.Formatter):
    """``#[pid] LEVEL: message`` (+ the traceback, if any, on the following lines)."""

    def format(self, record: logging.LogRecord) -> str:
        level = _LEVELS.get(record.levelname, record.levelname)
        line = f"#[{record.process}] {level}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(stream: TextIO | None = None, level: int = logging.DEBUG) -> None:
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(DeckFormatter())
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


# --- Ruby's inspect --------------------------------------------------------------------------------

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\f": "\\f", "\v": "\\v",
            "\b": "\\b", "\a": "\\a", "\x1b": "\\e"}
_UNPRINTABLE = {"Cc", "Cs", "Co", "Cn", "Zl", "Zp"}


def _inspect_str(s: str) -> str:
    out = ['"']
    for i, ch in enumerate(s):
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch == "#" and s[i + 1:i + 2] in ("{", "$", "@"):
            out.append("\\#")  # Ruby escapes what would start an interpolation
        elif unicodedata.category(ch) in _UNPRINTABLE:
            cp = ord(ch)
            out.append(f"\\u{cp:04X}" if cp < 0x10000 else f"\\u{{{cp:X}}}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _inspect_float(f: float) -> str:
    if f != f:
        return "NaN"
    if f in (float("inf"), float("-inf")):
        return "Infinity" if f > 0 else "-Infinity"
    sign, digits, exp = Decimal(repr(f)).as_tuple()
    assert isinstance(exp, int)
    ds = "".join(map(str, digits)).lstrip("0")
    if not ds:
        return "-0.0" if sign else "0.0"
    decpt = len(ds) + exp  # where the decimal point goes in the digit string
    ds = ds.rstrip("0")
    neg = "-" if sign else ""
    if -3 <= decpt <= 15:  # Ruby's Float#to_s: fixed notation in this range, exponent outside
        if decpt <= 0:
            return f"{neg}0.{'0' * -decpt}{ds}"
        if decpt >= len(ds):
            return f"{neg}{ds}{'0' * (decpt - len(ds))}.0"
        return f"{neg}{ds[:decpt]}.{ds[decpt:]}"
    e = decpt - 1
    return f"{neg}{ds[0]}.{ds[1:] or '0'}e{'+' if e >= 0 else '-'}{abs(e):02d}"


def ruby_inspect(value: Any) -> str:
    """``value`` (a JSON value) the way Ruby 1.9–3.3 ``inspect`` prints it: ``{"a"=>1, "b"=>[nil, true]}``."""
    if value is None:
        return "nil"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _inspect_float(value)
    if isinstance(value, str):
        return _inspect_str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{ruby_inspect(k)}=>{ruby_inspect(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(ruby_inspect(v) for v in value) + "]"
    return _inspect_str(str(value))

"""Value checks of command-line options, run before any work starts.

Each function returns the checked value or raises :class:`InputError` naming the option.  The
limits are documented in docs/formats.md ("Limits"); they keep a mistyped value from allocating
memory or running for days instead of being refused at once.
"""
from __future__ import annotations

import math
import os
from fractions import Fraction
from typing import Optional

from constructions.model import InputError

__all__ = ["MAX_SEED", "MAX_SECONDS", "MAX_TOLERANCE", "MAX_PROMPT_LENGTH", "MAX_BUILD_D", "MAX_HEADS",
           "MAX_MLP_WIDTH", "MAX_BUILD_PARAMETERS", "MAX_MARGIN", "MAX_PROMPT_NORM", "MAX_SAMPLES", "MAX_UNIV_D",
           "MAX_BOUNDS_SIZE", "MAX_BOUNDS_VERIFY_D", "seed", "int_range", "seconds", "positive_float", "rational",
           "out_dir", "file_suffix", "expect"]

MAX_SEED = 2 ** 63 - 1          #: seeds are integers in [0, 2**63 - 1]
MAX_SECONDS = 10 ** 6           #: time limits (--timeout, --naive-timeout): (0, 10**6] seconds
MAX_TOLERANCE = 10 ** 6         #: --tolerance in [0, 10**6]
MAX_PROMPT_LENGTH = 2 ** 40     #: --prompt-length K at most 2**40 (or 'any')
MAX_BUILD_D = 4096              #: d of the models ptverify builds itself (prove limitation, bench)
MAX_HEADS = 256                 #: heads of a built model
MAX_MLP_WIDTH = 16384           #: MLP width of a built model
MAX_BUILD_PARAMETERS = 2 ** 28  #: weights of a built model: 4 h s d + 2 r d + r + d (2 GiB of float64)
MAX_MARGIN = 10 ** 6            #: --margin in (0, 10**6]
MAX_PROMPT_NORM = 10 ** 6       #: --prompt-norm R in (0, 10**6]
MAX_SAMPLES = 10 ** 7           #: universality --samples
MAX_UNIV_D = 16                 #: universality --d (K**(d n) grid cells must stay at most 65536 anyway)
MAX_BOUNDS_SIZE = 2 ** 20       #: bounds' sizes (the table is arithmetic only)
MAX_BOUNDS_VERIFY_D = 256       #: bounds --verify: d of the instances built
_MAX_TEXT = 200                 #: characters of a number given as text


def seed(v: int, flag: str = "--seed") -> int:
    return int_range(v, flag, 0, MAX_SEED)


def int_range(v: int, flag: str, lo: int, hi: Optional[int] = None, why: str = "") -> int:
    """An integer in [lo, hi]."""
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        want = f"an integer in [{lo}, {hi}]" if hi is not None else f"an integer >= {lo}"
        raise InputError(flag, want + (f" ({why})" if why else ""), repr(v)[:40])
    return v


def seconds(v: float, flag: str = "--timeout") -> float:
    """A finite time limit in (0, MAX_SECONDS] seconds."""
    if not (isinstance(v, (int, float)) and math.isfinite(v) and 0 < v <= MAX_SECONDS):
        raise InputError(flag, f"a number of seconds > 0 and at most {MAX_SECONDS}", repr(v)[:40])
    return v


def positive_float(v: float, flag: str, hi: float) -> float:
    """A finite number in (0, hi]."""
    if not (isinstance(v, (int, float)) and math.isfinite(v) and 0 < v <= hi):
        raise InputError(flag, f"a number > 0 and at most {hi:g}", repr(v)[:40])
    return v


def rational(v: str, flag: str, lo: Fraction, hi: Fraction, lo_open: bool = False, what: str = "") -> Fraction:
    """An exact rational given as text ("1e-9", "1/1000", "0.5") in [lo, hi] ((lo, hi] if lo_open)."""
    from constructions.arrays import parse_number
    want = what or f"a number {'>' if lo_open else '>='} {lo} and at most {hi}, such as 1e-9 or 1/1000"
    if not isinstance(v, str) or len(v) > _MAX_TEXT:
        raise InputError(flag, want, repr(v)[:40])
    try:
        q = Fraction(parse_number(v, flag))
    except InputError:
        raise InputError(flag, want, repr(v)[:40]) from None
    if q < lo or (lo_open and q == lo) or q > hi:
        raise InputError(flag, want, repr(v)[:40])
    return q


def out_dir(path: str, flag: str = "--out") -> str:
    """A folder that exists and is writable, or can be made (its nearest existing ancestor is a
    writable folder).  Nothing is created here."""
    if not isinstance(path, str) or not path.strip():
        raise InputError(flag, "a folder path", repr(path))
    p = os.path.abspath(path)
    if os.path.exists(p):
        if not os.path.isdir(p):
            raise InputError(flag, "a folder", f"{path!r} is a file")
        if not os.access(p, os.W_OK | os.X_OK):
            raise InputError(flag, "a writable folder", f"{path!r} is not writable")
        return path
    up = os.path.dirname(p)
    while not os.path.exists(up):
        up = os.path.dirname(up)
    if not os.path.isdir(up):
        raise InputError(flag, "a folder that exists or can be made", f"{os.path.relpath(up)!r} is a file")
    if not os.access(up, os.W_OK | os.X_OK):
        raise InputError(flag, "a folder that exists or can be made", f"{os.path.relpath(up)!r} is not writable")
    return path


def file_suffix(path: Optional[str], flag: str, suffixes: tuple) -> Optional[str]:
    """A file name ending in one of ``suffixes`` (e.g. ``.json``, ``.npz``) whose folder can be made."""
    if path is None:
        return None
    if not path.endswith(suffixes):
        raise InputError(flag, f"a file name ending in {' or '.join(suffixes)}", repr(path))
    if os.path.isdir(path):
        raise InputError(flag, "a file name", f"{path!r} is a folder")
    out_dir(os.path.dirname(os.path.abspath(path)), flag)
    return path


def expect(v: Optional[str]) -> Optional[str]:
    """``--expect`` names a verdict."""
    from verify.result import Status
    names = [s.value for s in Status]
    if v is not None and v not in names:
        raise InputError("--expect", f"one of {', '.join(names)}", repr(v)[:40])
    return v

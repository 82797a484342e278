"""Progress reports from long computations: a three-call protocol, and a no-op default.

A prover, claim runner or experiment takes an optional ``progress`` argument and calls

* ``progress.stage(name)``: a new stage starts ("relaxation R", "layer 2 of 4", ...);
* ``progress.step(i, n, what)``: item ``i`` of ``n`` of the stage starts ("head", "claim", "cell");
* ``progress.log(line)``: a line of the computation's log (shown only when the user asks for it).

Nothing here prints.  When ``progress`` is None a computation reports to :func:`current`: the
reporter installed with :func:`use` (the command line installs one that writes to standard error
when it is a terminal, ``verify/cli/output.py``), else :data:`NULL`, which ignores everything.
:func:`scope` prefixes what a nested computation reports ("claim 2 of 9 (L1) > relaxation R").
No prover imports the CLI.
"""
from __future__ import annotations

import contextlib
from typing import Optional, Protocol

__all__ = ["Progress", "NullProgress", "NULL", "Prefixed", "current", "ensure", "use", "scope", "LogList"]


class Progress(Protocol):
    """What a computation may report while it runs (every call returns quickly, prints nothing itself)."""

    def stage(self, name: str) -> None: ...

    def step(self, i: int, n: int, what: str) -> None: ...

    def log(self, line: str) -> None: ...


class NullProgress:
    """The default reporter: ignores everything."""

    def stage(self, name: str) -> None:
        pass

    def step(self, i: int, n: int, what: str) -> None:
        pass

    def log(self, line: str) -> None:
        pass


#: the shared no-op reporter
NULL = NullProgress()

_STACK: list = []


def current() -> Progress:
    """The reporter installed by the innermost :func:`use` (:data:`NULL` when none)."""
    return _STACK[-1] if _STACK else NULL


def ensure(progress: Optional[Progress]) -> Progress:
    """``progress``, or :func:`current` when it is None (so callees never test for None)."""
    return current() if progress is None else progress


@contextlib.contextmanager
def use(progress: Progress):
    """Make ``progress`` the :func:`current` reporter inside the ``with`` block."""
    _STACK.append(progress)
    try:
        yield progress
    finally:
        _STACK.pop()


class Prefixed:
    """Forwards to ``inner`` with every stage name prefixed (a nested computation's reports)."""

    def __init__(self, inner: Progress, prefix: str):
        self.inner, self.prefix = inner, prefix

    def stage(self, name: str) -> None:
        self.inner.stage(f"{self.prefix} > {name}" if name else self.prefix)

    def step(self, i: int, n: int, what: str) -> None:
        self.inner.step(i, n, what)

    def log(self, line: str) -> None:
        self.inner.log(line)


@contextlib.contextmanager
def scope(prefix: str, progress: Optional[Progress] = None):
    """Report ``prefix`` as the stage, and prefix every stage reported inside the block with it."""
    p = Prefixed(ensure(progress), prefix)
    p.stage("")
    with use(p):
        yield p


class LogList(list):
    """A log (a list of lines, written to the result as is) that also hands each appended line to
    ``progress.log``."""

    def __init__(self, progress: Optional[Progress] = None):
        super().__init__()
        self._progress = ensure(progress)

    def append(self, line) -> None:
        super().append(line)
        self._progress.log(str(line))

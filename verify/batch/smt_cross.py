"""Z3 against cvc5 on the SMT-LIB2 queries the provers export (``--artifacts DIR``).

Each query file is solved by both solvers from the same text (Z3 through ``from_string``, cvc5
through its parser, logic QF_NRA, which covers the linear queries too).  ``sat`` against ``unsat``
is a disagreement; ``unknown`` (a time limit, an unsupported construct) is not, but is counted.
cvc5 is optional (``pip install 'ptverify[cvc5]'``): without it every file is ``cvc5: absent``.
"""
from __future__ import annotations

import os
import re
from typing import Optional

__all__ = ["cvc5_available", "solve_z3", "solve_cvc5", "cross_check_file", "cross_check_tree"]


def cvc5_available() -> bool:
    try:
        import cvc5  # noqa: F401
    except ImportError:
        return False
    return True


def solve_z3(text: str, ms: int = 10_000) -> str:
    import z3
    s = z3.Solver()
    s.set("timeout", int(ms))
    try:
        s.from_string(text)
        return str(s.check())
    except z3.Z3Exception as exc:
        return f"error: {str(exc)[:120]}"


_TOKEN = re.compile(r'\(|\)|\|[^|]*\||"(?:[^"]|"")*"|;[^\n]*|[^\s()]+')


def strict_smtlib(text: str) -> str:
    """Z3's SMT-LIB2 output made strict for other solvers: ``(+ t)`` and ``(* t)`` (one argument,
    which Z3 accepts and prints) become ``t``; comments go.  Nothing else changes."""
    stack: list = [[]]
    for tok in _TOKEN.findall(text):
        if tok.startswith(";"):
            continue
        if tok == "(":
            stack.append([])
        elif tok == ")":
            node = stack.pop()
            if len(node) == 2 and node[0] in ("+", "*"):
                stack[-1].append(node[1])
            else:
                stack[-1].append(node)
        else:
            stack[-1].append(tok)
    out: list = []

    def emit(node) -> None:
        work = [node]
        while work:
            n = work.pop()
            if isinstance(n, str):
                out.append(n)
            elif isinstance(n, list):
                out.append("(")
                work.append(")")
                for child in reversed(n):
                    work.append(child)
    for top in stack[0]:
        emit(top)
        out.append("\n")
    return " ".join(out).replace("( ", "(").replace(" )", ")")


def solve_cvc5(text: str, ms: int = 10_000) -> str:
    import cvc5
    body = strict_smtlib(text).replace("(check-sat)", "")
    last = "unknown"
    for logic in ("QF_NRA", "ALL"):
        slv = cvc5.Solver()
        slv.setOption("tlimit-per", str(int(ms)))
        slv.setLogic(logic)
        sm = cvc5.SymbolManager(slv.getTermManager() if hasattr(slv, "getTermManager") else slv)
        parser = cvc5.InputParser(slv, sm)
        try:
            parser.setStringInput(cvc5.InputLanguage.SMT_LIB_2_6, body, "query")
            while True:
                cmd = parser.nextCommand()
                if cmd.isNull():
                    break
                cmd.invoke(slv, sm)
            r = slv.checkSat()
        except RuntimeError as exc:   # a construct outside QF_NRA: try again with every theory
            last = f"error: {str(exc)[:120]}"
            continue
        return "sat" if r.isSat() else "unsat" if r.isUnsat() else "unknown"
    return last


#: cvc5's answer when Z3 did not decide the query: no answer of cvc5 could then disagree
NOT_RUN = "not run (z3 undecided)"


def cross_check_file(path: str, ms: int = 10_000, always_cvc5: bool = False) -> dict:
    """Both answers for one query file and whether they agree (``unknown``/errors never disagree).
    cvc5 is not run when Z3 did not decide (``unknown``, an error), since only two decided answers
    can disagree, unless ``always_cvc5``."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    decided = {"sat", "unsat"}
    a = solve_z3(text, ms)
    if not cvc5_available():
        b = "absent"
    elif a not in decided and not always_cvc5:
        b = NOT_RUN
    else:
        b = solve_cvc5(text, ms)
    return {"file": path, "z3": a, "cvc5": b, "agree": not (a in decided and b in decided and a != b)}


def cross_check_tree(root: str, ms: int = 10_000, files: Optional[list] = None, workers: int = 2,
                     work: Optional[str] = None) -> dict:
    """Cross-check every ``*.smt2`` under ``root``: counts and the disagreements.  The files are
    solved on the batch runner's local workers (:func:`verify.batch.runner.run_local`), so a solver
    that ignores its time limit is killed at 2 ms + 5 s (both solvers' limits) and counted as
    ``killed``."""
    import tempfile

    from verify.batch.runner import run_local
    paths = files if files is not None else sorted(
        os.path.join(dp, f) for dp, _, fs in os.walk(root) for f in fs if f.endswith(".smt2"))
    jobs = [{"id": f"q{i}", "command": "smt-cross", "file": os.path.abspath(p), "ms": ms,
             "job_timeout": 2 * ms / 1000 + 5} for i, p in enumerate(paths)]
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        recs = {r["id"]: r for r in run_local(jobs, tmp, workers=workers)}
    rows = []
    for j in jobs:
        r = recs.get(j["id"])
        if r is not None and r["status"] == "ok" and isinstance(r.get("smt"), dict):
            rows.append(r["smt"])
        else:
            rows.append({"file": j["file"], "z3": "killed", "cvc5": "killed", "agree": True,
                         "note": (r or {}).get("message", "")})
    both = sum(1 for r in rows if r["z3"] in ("sat", "unsat") and r["cvc5"] in ("sat", "unsat"))
    return {"queries": len(rows), "both_decided": both, "cvc5": "present" if cvc5_available() else "absent",
            "z3_answers": _count(r["z3"] for r in rows), "cvc5_answers": _count(r["cvc5"] for r in rows),
            "disagreements": [r for r in rows if not r["agree"]]}


def _count(xs) -> dict:
    out: dict = {}
    for x in xs:
        k = x if not x.startswith("error") else "error"
        out[k] = out.get(k, 0) + 1
    return out

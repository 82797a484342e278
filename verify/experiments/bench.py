"""``ptverify bench limitation``: the structured prover against a naive Z3 encoding.

Both sides get the same random single-layer model and the same L1 dataset
(:func:`constructions.datasets.l1_dataset`), on growing token dimension d.

* **structured**: :func:`verify.prover.prove_limitation` (relaxation R of Lemma D, decoupled
  per head, Farkas certificate re-verified in exact arithmetic); it answers for prompts of *any*
  length.
* **naive**: the question "does a prompt of length K give the targets?" written directly in Z3
  (:func:`encode_naive`): the prompt is K d unknown reals, the forward pass comes from
  :func:`constructions.forward.forward_z3` with the ReLU MLP as ``If`` terms, every exponential of
  a prompt-dependent score is an unconstrained positive real (one per distinct score term, so the
  two examples that share x_0 share them), every exponential of a fixed score is a real inside
  its rigorous enclosure from :func:`constructions.forward.exp_enclosure`, and the softmax
  weights multiply unknowns by unknowns.  No structure is used.  ``unsat`` means no prompt of
  length K (the encoding relaxes only the exponentials), ``sat`` proves nothing, and a timeout is
  just that.  The naive side is not certified: it is a timing baseline, never a verdict.

Timings are reported, never asserted.  Once the naive encoding times out on some d it is not run
on larger d (marked ``timeout (skipped)``).
"""
from __future__ import annotations

import json
import multiprocessing as mp
import time
from fractions import Fraction
from typing import Optional, Sequence

from constructions.model import Dataset, InputError, Model

__all__ = ["encode_naive", "solve_naive", "bench_limitation", "DEFAULT_DIMS", "BENCH_FORMAT"]

BENCH_FORMAT = "ptverify-bench/1"
DEFAULT_DIMS = (1, 2, 3, 4, 8, 16, 64, 256, 768)


# --------------------------------------------------------------------------- naive encoding

def _shared_exp_algebra():
    """A Z3Algebra whose exponential of a *variable* score is one unconstrained positive real per
    structurally distinct (simplified) score term, so examples that share a query token share
    their prompt exponentials, as they do in the real forward pass."""
    from constructions.forward import Z3Algebra

    class _SharedExp(Z3Algebra):
        def __init__(self):
            super().__init__(prefix="e")
            self._memo: dict = {}

        def _exp(self, s):
            if self.const_value(s) is not None:
                return super()._exp(s)        # fixed token: enclosed in [lo, hi]
            # compare structurally (the memo keeps each term alive, so Z3 cannot recycle it)
            simp = self.z3.simplify(s)
            bucket = self._memo.setdefault(simp.hash(), [])
            for term, E in bucket:
                if term.eq(simp):
                    return E
            E = self.z3.Real(f"{self.prefix}{len(self.exp_vars)}")
            self.exp_vars.append((E, s))
            self.constraints.append(E > 0)  # nothing else: unconstrained positive
            bucket.append((simp, E))
            return E

    return _SharedExp()


def encode_naive(model: Model, dataset: Dataset, prompt_length: int):
    """Z3 assertions for "a prompt of length ``prompt_length`` gives every non-null target".

    Returns ``(assertions, info)`` where ``info`` counts the unknowns.  Only single-layer models
    are accepted (the L1 question)."""
    import z3
    from constructions.forward import forward_z3
    if len(model.layers) != 1:
        raise InputError("model.layers", "a single-layer model", f"{len(model.layers)} layers")
    if prompt_length < 1:
        raise InputError("--prompt-length", "a positive integer", str(prompt_length))
    d = model.d
    P = [[z3.Real(f"p_{t}_{c}") for c in range(d)] for t in range(prompt_length)]
    alg = _shared_exp_algebra()
    goals = []
    for ex in dataset.examples:
        rows, _ = forward_z3(model, ex.input, P, alg=alg)
        for row, y in zip(rows, ex.output):
            if y is None:
                continue
            for term, target in zip(row, y):
                q = Fraction(target)
                goals.append(term == z3.RealVal(f"{q.numerator}/{q.denominator}"))
    assertions = list(alg.constraints) + goals
    n_fixed = sum(1 for _, s in alg.exp_vars if alg.const_value(s) is not None)
    info = {"prompt_reals": prompt_length * d, "exp_reals_free": len(alg.exp_vars) - n_fixed,
            "exp_reals_enclosed": n_fixed, "equations": len(goals), "assertions": len(assertions),
            "relu_ifs": sum(y is not None for ex in dataset.examples for y in ex.output) * model.layers[0].r}
    return assertions, info


def _naive_child(conn, model, dataset, prompt_length, timeout_s, artifacts):
    """Runs in a child process: encode, solve, send the answer back."""
    import z3
    try:
        t0 = time.perf_counter()
        assertions, info = encode_naive(model, dataset, prompt_length)
        s = z3.Solver()
        s.set("timeout", max(1, int(timeout_s * 1000)))
        s.add(*assertions)
        if artifacts:
            import os
            from constructions.model import atomic_write_text
            atomic_write_text(os.path.join(artifacts, f"naive_d{model.d}_K{prompt_length}.smt2"), s.to_smt2())
        t1 = time.perf_counter()
        r = s.check()
        t2 = time.perf_counter()
        ans = "sat" if r == z3.sat else "unsat" if r == z3.unsat else "unknown"
        reason = s.reason_unknown() if ans == "unknown" else ""
        if ans == "unknown" and ("timeout" in reason or "canceled" in reason):
            ans = "timeout"
        conn.send({"answer": ans, "reason": reason, "encode": t1 - t0, "solve": t2 - t1, "info": info})
    except Exception as exc:  # noqa: BLE001 - reported, never a verdict
        conn.send({"answer": "error", "reason": f"{type(exc).__name__}: {exc}", "encode": 0.0, "solve": 0.0, "info": {}})
    finally:
        conn.close()


def solve_naive(model: Model, dataset: Dataset, prompt_length: int, timeout_s: float,
                artifacts: Optional[str] = None, grace_s: float = 10.0) -> dict:
    """Decide the naive encoding with Z3 in a child process.

    Z3's own timeout limits the solve; the child is killed ``grace_s`` seconds after that in case
    the solver does not honour it (then the answer is ``timeout`` too).  Returns a dict with
    ``answer`` (``sat``, ``unsat``, ``unknown``, ``timeout`` or ``error``), ``seconds`` (encode plus
    solve wall time), ``encode``, ``solve`` and ``info``."""
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    parent, child = ctx.Pipe(duplex=False)
    t0 = time.perf_counter()
    proc = ctx.Process(target=_naive_child, args=(child, model, dataset, prompt_length, timeout_s, artifacts),
                       daemon=True)
    proc.start()
    child.close()
    out = None
    if parent.poll(timeout_s + grace_s + 60.0):   # encoding large d takes a while too
        try:
            out = parent.recv()
        except EOFError:
            out = None
    wall = time.perf_counter() - t0
    if proc.is_alive():
        proc.terminate()
        proc.join(5)
        if proc.is_alive():
            proc.kill()
    proc.join(5)
    if out is None:
        return {"answer": "timeout", "reason": "killed after the time limit", "seconds": wall,
                "encode": None, "solve": None, "info": {}}
    out["seconds"] = out["encode"] + out["solve"]
    return out


# --------------------------------------------------------------------------- the benchmark

def _heads_for(d: int, heads) -> int:
    if heads == "auto":
        return max(1, d // 64)
    return int(heads)


def bench_limitation(dims: Sequence[int] = DEFAULT_DIMS, heads="auto", naive_timeout: float = 60.0,
                     prompt_length: int = 1, seed: int = 0, mlp_ratio: Optional[int] = 4,
                     artifacts: Optional[str] = None, progress=None) -> dict:
    """Time the structured prover against the naive encoding for each d in ``dims``.

    ``heads`` is a number or ``"auto"`` (d // 64 heads of size 64, at least one head of size d);
    the MLP width is ``mlp_ratio * d`` (None: the builder's default 2 d).  Returns the
    ``ptverify-bench/1`` dictionary (also what ``--json`` writes)."""
    from verify.provers.limitation import prove_limitation
    prove_limitation(d=1, heads=1, seed=seed)   # warm-up: imports and caches are not timed
    rows = []
    naive_stopped = False
    for d in dims:
        h = _heads_for(d, heads)
        r = None if mlp_ratio is None else mlp_ratio * d
        t0 = time.perf_counter()
        res, model, ds = prove_limitation(d=d, heads=h, head_size=None, mlp_width=r, seed=seed)
        st_wall = time.perf_counter() - t0
        data = res.to_json()
        info = data["info"]
        row = {"d": d, "heads": h, "head_size": model.layers[0].heads[0].s, "mlp_width": model.layers[0].r,
               "examples": len(ds.examples),
               "structured": {"status": data["status"], "seconds": st_wall, "breakdown": info["seconds"],
                              "certificate_checked": bool(info["checks"].get("certificate_checked", False)),
                              "method": info["method"], "prompt_length": data["question"]["prompt_length"]}}
        if naive_stopped:
            row["naive"] = {"answer": "timeout (skipped)", "seconds": None, "prompt_length": prompt_length}
        else:
            if progress:
                progress(f"d = {d}: structured {data['status']} in {st_wall:.3f} s; naive running (limit {naive_timeout:g} s)")
            nv = solve_naive(model, ds, prompt_length, naive_timeout, artifacts=artifacts)
            row["naive"] = {"answer": nv["answer"], "seconds": nv["seconds"], "encode": nv["encode"],
                            "solve": nv["solve"], "reason": nv["reason"], "size": nv["info"],
                            "prompt_length": prompt_length}
            if nv["answer"] in ("timeout", "unknown", "error"):
                naive_stopped = True
        nsec = row["naive"]["seconds"]
        if row["naive"]["answer"] in ("timeout (skipped)", "error"):
            row["speedup"], row["speedup_lower_bound"] = None, None
        elif row["naive"]["answer"] in ("sat", "unsat"):
            row["speedup"], row["speedup_lower_bound"] = nsec / st_wall, False
        else:  # the naive side ran out of time: the ratio is only a lower bound
            row["speedup"], row["speedup_lower_bound"] = max(nsec, naive_timeout) / st_wall, True
        rows.append(row)
        if progress:
            progress(_row_line(row))
    return {"format": BENCH_FORMAT, "bench": "limitation", "seed": seed, "heads": heads,
            "mlp_ratio": mlp_ratio, "naive_timeout_s": naive_timeout, "naive_prompt_length": prompt_length,
            "rows": rows}


def _fmt_speedup(row) -> str:
    if row["speedup"] is None:
        return "-"
    return (">= " if row["speedup_lower_bound"] else "") + f"{row['speedup']:.0f}x"


def _row_line(row) -> str:
    nv = row["naive"]
    ns = "-" if nv["seconds"] is None else f"{nv['seconds']:.3f} s"
    return (f"d = {row['d']}: structured {row['structured']['status']} {row['structured']['seconds']:.3f} s, "
            f"naive {nv['answer']} {ns}, speedup {_fmt_speedup(row)}")


def print_table(report: dict, console) -> None:
    from rich import box
    from rich.table import Table
    t = Table(title=f"bench limitation: structured (any prompt length) vs naive Z3 (prompt length "
                    f"{report['naive_prompt_length']}, limit {report['naive_timeout_s']:g} s)",
              caption="* certificate re-verified in exact arithmetic; skipped: not run after the "
                      "naive encoding first timed out", box=box.SIMPLE_HEAD)
    for col in ("d", "heads", "r", "structured s", "verdict", "naive s", "naive", "speedup"):
        t.add_column(col, justify="left" if col in ("verdict", "naive") else "right", no_wrap=True)
    for row in report["rows"]:
        st, nv = row["structured"], row["naive"]
        verdict = st["status"] + ("*" if st["certificate_checked"] else "")
        answer = "skipped" if nv["answer"] == "timeout (skipped)" else nv["answer"]
        t.add_row(str(row["d"]), str(row["heads"]), str(row["mlp_width"]), f"{st['seconds']:.3f}", verdict,
                  "-" if nv["seconds"] is None else f"{nv['seconds']:.3f}", answer, _fmt_speedup(row))
    console.print(t)

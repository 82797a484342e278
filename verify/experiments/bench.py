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
on larger d (marked ``timeout (skipped)``); ``naive_max_d`` bounds the d it is tried on, so that a
long ``naive_timeout`` measures the ratio at d = 2 and 3 instead of bounding it.  The structured
side runs as ``ptverify prove limitation`` in a child process (wall time, CPU time, peak resident
memory, the result's stage times), then ``python -m verify.checker`` on its result (the
independent check alone).  Growth exponents are least-squares slopes of log time against log d
on the rows with d >= 64.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import time
from fractions import Fraction
from typing import Optional, Sequence

from constructions.model import Dataset, InputError, Model

__all__ = ["encode_naive", "solve_naive", "NAIVE_FORMS", "bench_limitation", "run_structured", "growth_exponent", "DEFAULT_DIMS",
           "LARGE_DIMS", "STAGES", "BENCH_FORMAT"]

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


def _naive_child(conn, model, dataset, prompt_length, timeout_s, artifacts, form="api"):
    """Runs in a child process: encode, solve, send the answer back."""
    import z3
    try:
        t0 = time.perf_counter()
        assertions, info = encode_naive(model, dataset, prompt_length)
        s = z3.Solver()
        s.set("timeout", max(1, int(timeout_s * 1000)))
        s.add(*assertions)
        text = s.to_smt2() if artifacts or form == "smtlib" else None
        if artifacts:
            import os
            from constructions.model import atomic_write_text
            atomic_write_text(os.path.join(artifacts, f"naive_d{model.d}_K{prompt_length}.smt2"), text)
        if form == "smtlib":
            s = z3.Solver()
            s.set("timeout", max(1, int(timeout_s * 1000)))
            s.from_string(text)
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


#: how the naive query reaches Z3: "api", the assertions as built in Python; "smtlib", the same
#: assertions printed as SMT-LIB2 and read back into a fresh solver.  Both are one formula, but
#: Z3's nonlinear real arithmetic depends on the order in which terms and variables are created,
#: and its times differ by orders of magnitude between the two (proofs/L1.md)
NAIVE_FORMS = ("api", "smtlib")


def solve_naive(model: Model, dataset: Dataset, prompt_length: int, timeout_s: float,
                artifacts: Optional[str] = None, grace_s: float = 10.0, form: str = "api") -> dict:
    """Decide the naive encoding with Z3 in a child process (``form``: see NAIVE_FORMS).

    Z3's own timeout limits the solve; the child is killed ``grace_s`` seconds after that in case
    the solver does not honour it (then the answer is ``timeout`` too).  Returns a dict with
    ``answer`` (``sat``, ``unsat``, ``unknown``, ``timeout`` or ``error``), ``seconds`` (encode plus
    solve wall time), ``encode``, ``solve`` and ``info``."""
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    parent, child = ctx.Pipe(duplex=False)
    t0 = time.perf_counter()
    proc = ctx.Process(target=_naive_child, args=(child, model, dataset, prompt_length, timeout_s, artifacts, form),
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

#: rows added by ``--large``: BERT-large (d 1024, 16 heads) and GPT-2-XL (d 1600, 25 heads), MLP 4 d
LARGE_DIMS = (1024, 1600)
#: growth exponents are fitted on rows with at least this d (smaller rows measure start-up costs)
FIT_MIN_D = 64
#: the prover's stages, in the order they run (``info.seconds`` of a result)
STAGES = ("instance", "inputs", "mlp_bound", "exact_layer", "preimages", "direct_sum", "relaxation", "check")


def _heads_for(d: int, heads) -> int:
    if heads == "auto":
        return max(1, d // 64)
    return int(heads)


def _timed(cmd: list, log: str) -> dict:
    """Run ``cmd`` as a child process: wall seconds, exit code and its own peak resident memory."""
    import os
    import subprocess
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"seconds": time.perf_counter() - t0, "rc": proc.returncode, "peak_mb": usage.ru_maxrss / 1024.0,
            "cpu_seconds": usage.ru_utime + usage.ru_stime}


def run_structured(d: int, heads: int, mlp_width: int, seed: int, folder: str, timeout: float = 3600.0) -> dict:
    """``ptverify prove limitation`` on one size in a child process (wall time, peak memory, the
    result's stage times), then ``python -m verify.checker`` on its result (the independent check
    alone: wall time and peak memory)."""
    import os
    import sys
    path = os.path.join(folder, f"limitation_d{d}.json")
    prove = _timed([sys.executable, "-m", "verify", "prove", "limitation", "--d", str(d), "--heads", str(heads),
                    "--mlp-width", str(mlp_width), "--seed", str(seed), "--timeout", f"{timeout:g}",
                    "--json", path, "-q"], path + ".log")
    out = {"status": "error", "seconds": prove["seconds"], "cpu_seconds": prove["cpu_seconds"],
           "peak_mb": prove["peak_mb"], "stages": {}, "certificate_checked": False, "method": "",
           "prompt_length": "any", "replay": None}
    if prove["rc"] != 0 or not os.path.exists(path):
        out["method"] = f"prove exited {prove['rc']} (log: {path}.log)"
        return out
    with open(path) as fh:
        data = json.load(fh)
    info = data.get("info", {})
    secs = info.get("seconds", {})
    out.update(status=data["status"], method=info.get("method", ""), prompt_length=data["question"]["prompt_length"],
               certificate_checked=bool(info.get("checks", {}).get("certificate_checked", False)),
               stages={k: info.get("stages", {})[k] for k in STAGES if k in info.get("stages", {})},
               in_process=sum(secs.get(k, 0.0) for k in ("build", "solve", "check")))
    rep = _timed([sys.executable, "-m", "verify.checker", path], path + ".replay.log")
    out["replay"] = {"ok": rep["rc"] == 0, "seconds": rep["seconds"], "peak_mb": rep["peak_mb"],
                     "cpu_seconds": rep["cpu_seconds"]}
    return out


def growth_exponent(rows: list, value) -> Optional[float]:
    """Least-squares slope of log(value(row)) against log(d) over the rows with d >= FIT_MIN_D
    (None with fewer than two such rows)."""
    import math
    pts = [(math.log(r["d"]), math.log(v)) for r in rows if r["d"] >= FIT_MIN_D
           for v in [value(r)] if v is not None and v > 0]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return None if sxx == 0 else sum((x - mx) * (y - my) for x, y in pts) / sxx


def _naive_row(model, ds, d, prompt_length, naive_timeout, artifacts, stopped, naive_max_d, form="api"):
    if stopped or (naive_max_d is not None and d > naive_max_d):
        return {"answer": "timeout (skipped)" if stopped else "not run (d > --naive-max-d)", "seconds": None,
                "prompt_length": prompt_length, "form": form}
    nv = solve_naive(model, ds, prompt_length, naive_timeout, artifacts=artifacts, form=form)
    return {"answer": nv["answer"], "seconds": nv["seconds"], "encode": nv["encode"], "solve": nv["solve"],
            "reason": nv["reason"], "size": nv["info"], "prompt_length": prompt_length, "form": form}


def _speedup(row: dict, naive_timeout: float) -> None:
    nv, st = row["naive"], row["structured"]
    base = st.get("in_process") or st["seconds"]
    if nv["answer"] in ("sat", "unsat"):
        row["speedup"], row["speedup_lower_bound"] = nv["seconds"] / base, False
    elif nv["answer"] in ("timeout", "unknown"):   # ran out of time: the ratio is only a lower bound
        row["speedup"], row["speedup_lower_bound"] = max(nv["seconds"], naive_timeout) / base, True
    else:
        row["speedup"], row["speedup_lower_bound"] = None, None


def bench_limitation(dims: Sequence[int] = DEFAULT_DIMS, heads="auto", naive_timeout: float = 60.0,
                     prompt_length: int = 1, seed: int = 0, mlp_ratio: Optional[int] = 4,
                     artifacts: Optional[str] = None, progress=None, naive_max_d: Optional[int] = None,
                     folder: Optional[str] = None, naive_form: str = "api") -> dict:
    """Time the structured prover against the naive encoding for each d in ``dims``.

    ``heads`` is a number or ``"auto"`` (d // 64 heads of size 64, at least one head of size d);
    the MLP width is ``mlp_ratio * d`` (None: 2 d).  The structured side runs as the CLI command
    in a child process (its wall time, peak memory and stage times), then the trusted checker on
    its result; the naive side runs for d <= ``naive_max_d`` until it first runs out of time.
    Result files go to ``folder`` (a temporary folder when None).  Returns the
    ``ptverify-bench/1`` dictionary (also what ``--json`` writes), with growth exponents fitted
    on the rows with d >= FIT_MIN_D."""
    import tempfile
    from constructions.datasets import l1_dataset, random_model
    folder = folder or tempfile.mkdtemp(prefix="ptverify-bench-")
    rows, stopped = [], False
    for d in dims:
        h = _heads_for(d, heads)
        r = 2 * d if mlp_ratio is None else mlp_ratio * d
        st = run_structured(d, h, r, seed, folder)
        row = {"d": d, "heads": h, "head_size": max(1, d // h), "mlp_width": r, "structured": st}
        model = random_model(d, heads=h, mlp_width=r, seed=seed) if not stopped and (naive_max_d is None or d <= naive_max_d) else None
        ds = l1_dataset(model, seed=seed) if model is not None else None
        row["examples"] = len(ds.examples) if ds is not None else None
        if progress and model is not None:
            progress(f"d = {d}: structured {st['status']} in {st['seconds']:.3f} s; naive running (limit {naive_timeout:g} s)")
        row["naive"] = _naive_row(model, ds, d, prompt_length, naive_timeout, artifacts, stopped, naive_max_d,
                                  naive_form)
        stopped = stopped or row["naive"]["answer"] in ("timeout", "unknown", "error")
        _speedup(row, naive_timeout)
        rows.append(row)
        if progress:
            progress(_row_line(row))
    growth = {"fit_min_d": FIT_MIN_D,
              "prove": growth_exponent(rows, lambda r: r["structured"].get("in_process")),
              "prove_wall": growth_exponent(rows, lambda r: r["structured"]["seconds"]),
              "prove_cpu": growth_exponent(rows, lambda r: r["structured"]["cpu_seconds"]),
              "replay": growth_exponent(rows, lambda r: (r["structured"]["replay"] or {}).get("seconds")),
              "replay_cpu": growth_exponent(rows, lambda r: (r["structured"]["replay"] or {}).get("cpu_seconds")),
              "peak_memory": growth_exponent(rows, lambda r: r["structured"]["peak_mb"])}
    return {"format": BENCH_FORMAT, "bench": "limitation", "seed": seed, "heads": heads,
            "mlp_ratio": mlp_ratio, "naive_timeout_s": naive_timeout, "naive_prompt_length": prompt_length,
            "naive_max_d": naive_max_d, "naive_form": naive_form, "folder": folder, "rows": rows, "growth": growth}


def _fmt_speedup(row) -> str:
    if row["speedup"] is None:
        return "-"
    return (">= " if row["speedup_lower_bound"] else "") + f"{row['speedup']:.0f}x"


def _row_line(row) -> str:
    nv, st = row["naive"], row["structured"]
    ns = "-" if nv["seconds"] is None else f"{nv['seconds']:.3f} s"
    rp = st["replay"]
    rs = "-" if rp is None else f"{rp['seconds']:.2f} s"
    return (f"d = {row['d']}: structured {st['status']} {st['seconds']:.2f} s ({st['peak_mb']:.0f} MB), "
            f"replay {rs}, naive {nv['answer']} {ns}, speedup {_fmt_speedup(row)}")


_SHORT = {"instance": "inst", "inputs": "io", "mlp_bound": "k", "exact_layer": "ex", "preimages": "pre",
          "direct_sum": "ds", "relaxation": "R", "check": "chk"}


def _stages_text(st: dict) -> str:
    return " ".join(f"{_SHORT[k]} {v:.2f}" for k, v in st["stages"].items()) or "-"


def print_table(report: dict, console) -> None:
    from rich import box
    from rich.table import Table
    t = Table(title=f"bench limitation: structured (any prompt length) vs naive Z3 (prompt length "
                    f"{report['naive_prompt_length']}, limit {report['naive_timeout_s']:g} s)",
              caption="* certificate accepted by the trusted checker in the prover and again by python -m "
                      "verify.checker on the written result (replay); wall seconds and peak memory (MB) of each "
                      "command; skipped: not run after the naive encoding first timed out",
              box=box.SIMPLE_HEAD)
    for col in ("d", "heads", "prove s", "MB", "replay s", "verdict", "naive s", "naive", "speedup"):
        t.add_column(col, justify="left" if col in ("verdict", "naive") else "right", no_wrap=True)
    for row in report["rows"]:
        st, nv = row["structured"], row["naive"]
        rp = st["replay"]
        verdict = st["status"] + ("*" if st["certificate_checked"] and rp and rp["ok"] else "")
        answer = "skipped" if nv["answer"] == "timeout (skipped)" else nv["answer"].split(" (")[0]
        t.add_row(str(row["d"]), str(row["heads"]), f"{st['seconds']:.2f}", f"{st['peak_mb']:.0f}",
                  "-" if rp is None else f"{rp['seconds']:.2f}", verdict,
                  "-" if nv["seconds"] is None else f"{nv['seconds']:.3f}", answer, _fmt_speedup(row))
    console.print(t)
    console.print("per row: MLP width r, CPU seconds of prove and replay, replay peak memory, and the stages in "
                  "seconds (inst = model and dataset, io = inputs written, k = MLP bound, ex = exact layer, "
                  "pre = preimages, ds = direct sum, R = relaxation and Farkas, chk = trusted check):")
    for row in report["rows"]:
        st, rp = row["structured"], row["structured"]["replay"] or {}
        console.print(f"  d = {row['d']}: r {row['mlp_width']}, CPU {st['cpu_seconds']:.2f} s / "
                      f"{rp.get('cpu_seconds', 0.0):.2f} s, replay {rp.get('peak_mb', 0.0):.0f} MB; "
                      f"{_stages_text(st)}")
    g = report["growth"]

    def ex(v):
        return "-" if v is None else f"{v:.2f}"
    console.print(f"growth exponent (time ~ d^e, rows with d >= {g['fit_min_d']}): prove {ex(g['prove'])} "
                  f"(CPU {ex(g['prove_cpu'])}), replay {ex(g['replay'])} (CPU {ex(g['replay_cpu'])}), "
                  f"peak memory {ex(g['peak_memory'])}")

"""The real-layer prover (proofs/real_layers.md): limitations of a single softmax layer with
biases, score scale and LayerNorms, on datasets whose targets are taken at the attention block
(``"at": "attention"``).

:func:`check_real` searches pairs of constrained members that share the query token and, per
head, a certificate (:mod:`.pair`); "proved" stands only once the trusted checker
(``verify/checker/real.py``) accepts the whole result.  Anything else is "unknown" with the reason.
"""
from __future__ import annotations

import time
from fractions import Fraction
from typing import Optional

from constructions.arrays import blas_threads
from constructions.model import Dataset, Model
from verify.result import Result, Status, certificate

__all__ = ["CERT_KIND", "check_real", "unsupported_reason"]

CERT_KIND = "limitation-real-pair"
#: pairs tried at most (each costs one LP per head, and an exact solve when an LP succeeds)
MAX_PAIRS = 64


def unsupported_reason(model: Model, dataset: Dataset) -> Optional[str]:
    """Why the real-layer pair theorem cannot apply to this question (None when it may)."""
    if dataset.at != "attention":
        return ("targets at the layer output of a real layer (LayerNorm, GELU, biases) are not covered: "
                "no theorem for them is implemented (the textbook L1/L2 need the plain layer); targets at "
                "the attention block (\"at\": \"attention\") are")
    if len(model.layers) != 1:
        return f"the real-layer pair theorem is for a single layer; this model has {len(model.layers)} layers"
    if model.layers[0].kind != "softmax":
        return "the real-layer pair theorem needs a softmax layer (this layer is hardmax)"
    return None


def check_real(model: Model, dataset: Dataset, prompt_length="any", tolerance=Fraction(0), timeout: float = 60.0,
               claim: str = "check", side_files: Optional[str] = None, inputs_extra: Optional[dict] = None,
               max_pairs: int = MAX_PAIRS, prompt_norm=None) -> Result:
    """Decide (one way only: "proved" or "unknown") whether a prompt reaches the dataset's
    attention-block targets: the pair theorem, then a separating direction (proofs/reach.md).
    Timeout bounds the search, not the trusted checker's final check.  ``prompt_norm`` (R) asks
    about prompts whose rows have 2-norm at most R (the question's ``prompt_norm``)."""
    from verify.provers.limitation.results import new_result
    from verify.checker.numbers import fmt
    t0 = time.perf_counter()
    tol = Fraction(tolerance)
    res = new_result(model, dataset, claim, prompt_length, tol, side_files, inputs_extra)
    if prompt_norm is not None:
        res.question["prompt_norm"] = fmt(Fraction(prompt_norm))
    res.seconds["build"] = time.perf_counter() - t0
    reason = unsupported_reason(model, dataset)
    if reason is not None:
        res.message = reason + "; nothing is claimed"
        res.method = "real-layer pair theorem (not applicable)"
        return res
    with blas_threads(1):
        _search(res, model, dataset, tol, timeout, max_pairs, t0)
        if res.status == Status.UNKNOWN:
            _separate(res, model, dataset, tol, prompt_norm, timeout, t0)
    return res


#: separating directions sent to the trusted checker at most
MAX_DIRECTIONS = 8


def _separate(res: Result, model: Model, dataset: Dataset, tol: Fraction, prompt_norm, timeout: float,
              t0: float) -> None:
    """A target out of the certified reach along a rational direction (kind
    ``limitation-real-reach``); leaves ``res`` as it was (message extended) when none is found."""
    from verify.provers.real.separate import CERT_KIND as SEP_KIND
    from verify.provers.real.separate import candidates
    if model.layers[0].kind != "softmax":
        return
    why, method = res.message, res.method
    log = res.extra.setdefault("log", [])
    t1, tried = time.perf_counter(), 0
    for body in candidates(model, dataset, tol, prompt_norm):
        if tried >= MAX_DIRECTIONS or time.perf_counter() - t0 > timeout:
            break
        tried += 1
        res.certificate = certificate(SEP_KIND, body)
        if _vet(res):
            res.seconds["separate"] = time.perf_counter() - t1
            res.method = (f"separating direction beyond the certified reach (proofs/reach.md); example "
                          f"{body['example']}, position {body['position']}, side {body['side']}")
            return
        log.append(f"direction at example {body['example']} position {body['position']}: {res.message}")
    res.seconds["separate"] = time.perf_counter() - t1
    res.method = method
    res.message = (f"{why}; no separating direction either ({tried} candidate(s) beyond the certified reach "
                   f"sent to the trusted checker, none accepted)" if tried else
                   f"{why}; no target lies beyond its float reach bounds along the directions tried")


def _search(res: Result, model: Model, dataset: Dataset, tol: Fraction, timeout: float, max_pairs: int,
            t0: float) -> None:
    from verify.provers.real.forward import FloatLayer
    from verify.provers.real.pair import exact_z, find_direction, functionals, pairs
    fl = FloatLayer(model.layers[0], model.d)
    log = res.extra.setdefault("log", [])
    tried, t1 = 0, time.perf_counter()
    res.method = "real-layer pair theorem (proofs/real_layers.md)"
    for m1, m2 in pairs(dataset, model.causal):
        if tried >= max_pairs:
            log.append(f"stopped after {max_pairs} pairs")
            break
        tried += 1
        for j in range(len(fl.heads)):
            if time.perf_counter() - t0 > timeout:
                res.status = Status.TIMEOUT
                res.extra["stage"] = "real-layer pair search"
                res.message = f"ran out of time (--timeout {timeout:g} s) in stage 'real-layer pair search'; nothing is claimed"
                res.seconds["solve"] = time.perf_counter() - t1
                return
            F = functionals(fl, dataset, m1, m2, j, model.causal)
            found = find_direction(F, float(tol), model.d)
            if found is None:
                continue
            z, margin = found
            Z = exact_z(F.constraints, z)
            if Z is None:
                log.append(f"pair {m1}/{m2} head {j}: LP margin {margin:.3g} but no exact solve")
                continue
            res.seconds["solve"] = time.perf_counter() - t1
            body = {"examples": [m1.example, m2.example], "positions": [m1.position, m2.position],
                    "head": j, "z": [hex(v) for v in Z]}
            res.certificate = certificate(CERT_KIND, body)
            res.extra["lp_margin"] = margin
            if _vet(res):
                res.method += f"; examples {m1.example}, {m2.example}, head {j}"
                return
            log.append(f"pair {m1}/{m2} head {j}: {res.message}")
    res.seconds["solve"] = time.perf_counter() - t1
    if tried == 0:
        res.message = ("no two constrained outputs share their query token: the real-layer pair theorem needs such a "
                       "pair; nothing is claimed")
    else:
        res.message = (f"no certificate found for {tried} pair(s) sharing a query token (every LP infeasible or "
                       "rejected); nothing is claimed")


def _vet(res: Result) -> bool:
    """"proved" only if the trusted checker accepts the whole result."""
    from verify.checker import check_result
    from verify.provers.limitation.results import base_dir
    t = time.perf_counter()
    res.status = Status.PROVED
    ok, msg = check_result(res.to_json(), base_dir(res))
    res.seconds["check"] = time.perf_counter() - t
    res.checks["certificate_checked"] = ok
    if ok:
        res.message = f"certificate accepted by the trusted checker: {msg}"
        return True
    res.status, res.certificate, res.reported = Status.UNKNOWN, None, {}
    res.message = f"a certificate was found but the trusted checker rejected it: {msg}"
    return False


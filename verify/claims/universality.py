"""Theorem U's claims: the exact (hardmax) and standard (softmax) versions, d = 1 n = 2 and
d = 2 n = 1, and the broadcast construction at d = 1 n = 3 (``proofs/universality.md``)."""
from __future__ import annotations

from verify.claims import Claim
from verify.result import Result, Status

__all__ = ["CLAIMS"]


def _claim_run(base: dict):
    def run(params: dict, outdir: str) -> Result:
        from verify.provers.universality import run_universality
        q = dict(base)
        q.update(params)
        return run_universality(d=int(q["d"]), n=int(q["n"]), L=q["L"], p=q["p"], eps=q["eps"],
                                target=q["target"], seed=int(q.get("seed", 0)), temperature=q.get("T"),
                                samples=int(q.get("samples", 4096)), claim=q["claim"])
    return run


def _claim(cid, title, quick, default, cmd):
    return Claim(id=cid, title=title,
                 statement="a prompt makes the frozen network g within eps of the target in d_p "
                           "(rigorous upper bound <= eps)",
                 expected=Status.VERIFIED, run=_claim_run({"claim": cid}), quick=quick, default=default,
                 command=cmd, proof="proofs/universality.md",
                 test="tests/test_checker_universality.py::test_quick_claims_hold_and_every_mutation_is_rejected")


_Q = {"L": "1", "p": "2", "samples": 4096}
CLAIMS = [
    _claim("U-hardmax", "Theorem U, exact (hardmax) version, d=1 n=2",
           dict(_Q, d=1, n=2, eps="1/2", target="relu-net"), dict(_Q, d=1, n=2, eps="1/4", target="relu-net"),
           "ptverify universality --d 1 --n 2 --lipschitz 1 --p 2 --eps 0.25 --target relu-net --expect verified"),
    _claim("U-softmax", "Theorem U, standard (softmax) version at T = 1/64, d=1 n=2",
           dict(_Q, d=1, n=2, eps="1/2", target="smooth", T="1/64"),
           dict(_Q, d=1, n=2, eps="1/4", target="smooth", T="1/64"),
           "ptverify universality --d 1 --n 2 --lipschitz 1 --p 2 --eps 0.25 --target smooth "
           "--softmax-temperature 1/64 --expect verified"),
    _claim("U-d2", "Theorem U, exact version, d=2 n=1",
           dict(_Q, d=2, n=1, eps="1/2", target="token-mix"), dict(_Q, d=2, n=1, eps="1/4", target="token-mix"),
           "ptverify universality --d 2 --n 1 --lipschitz 1 --p 2 --eps 0.25 --target token-mix --expect verified"),
    _claim("U-n3", "Theorem U, exact version, d=1 n=3 (broadcast construction, depth 7)",
           dict(_Q, d=1, n=3, eps="1", target="relu-net"), dict(_Q, d=1, n=3, eps="1/4", target="relu-net"),
           "ptverify universality --d 1 --n 3 --lipschitz 1 --p 2 --eps 0.25 --target relu-net --expect verified"),
]

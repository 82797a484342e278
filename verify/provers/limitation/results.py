"""The result envelope of a single-layer check: question and inputs, the certificate body, and
vetting through the trusted checker.

Inputs are embedded when small, else written as content-addressed side files next to the result.
A ``limitation-farkas`` body carries hints only (the checker re-derives tolerance, prompt length,
k, logarithms and ranks from the question and the inputs); "proved" stands only once
:mod:`verify.checker` accepts the whole result, and ``reported`` holds what the checker derives.
"""
from __future__ import annotations

import hashlib
import os
from typing import Optional

import numpy as np

from constructions.model import (Dataset, InputError, Model, as_scaled_int, dataset_to_json, model_to_json,
                                 save_model)
from verify.provers.assumptions import certify_mlp
from verify.provers.exact import fmt, fmt_vec
from verify.provers.limitation.farkas import Proof
from verify.result import Result, Status, embed, memorization_question, solver_info

__all__ = ["CERT_KIND", "WITNESS_KIND", "mlp_certificate", "new_result", "base_dir", "certificate_body",
           "proof_method", "vet_proof"]

CERT_KIND = "limitation-farkas"
WITNESS_KIND = "prompt-witness"


def mlp_certificate(layer) -> dict:
    """k for the MLP: the trusted checker's own bound (it derives k itself, and the certificate's
    slack must hold with its k), computed on the same exact matrices it reads.  Small layers also
    try :func:`certify_mlp` and keep the larger k."""
    from verify.checker.limitation import norm_upper
    from verify.checker.numbers import LIMB_MIN_SIZE
    W1, W2 = _checker_mat(layer.W_1), _checker_mat(layer.W_2)
    b1, b2 = norm_upper(W1), norm_upper(W2)
    kc = b1 * b2
    _CHECKER_K.clear()
    _CHECKER_K[(id(layer.W_1), id(layer.W_2))] = (layer.W_1, layer.W_2, kc)
    if W1.shape[0] * W1.shape[1] >= LIMB_MIN_SIZE or W2.shape[0] * W2.shape[1] >= LIMB_MIN_SIZE:
        return {"k": kc, "injective": kc < 1, "bound_W1": b1, "bound_W2": b2,
                "methods": ["checker norm bound (grid sums)"] * 2}
    mlpc = certify_mlp(layer)
    return dict(mlpc, k=kc, injective=kc < 1) if kc > mlpc["k"] else mlpc


def _checker_mat(W):
    """The checker's exact matrix for a weight array (binary64 read as such, else scaled integers)."""
    from verify.checker.numbers import Mat
    a = np.asarray(W)
    if a.dtype == np.float64:
        return Mat.from_float(a)
    return Mat(*as_scaled_int(a))


# --------------------------------------------------------------------------- envelope and inputs

def new_result(model: Model, dataset: Dataset, claim: str, prompt_length, tol, side_files: Optional[str],
               extra: Optional[dict]) -> Result:
    """An "unknown" result with its question and inputs; ``res._base_dir`` is the folder of its
    side files (the result file must be written there)."""
    # side files are written to a private temporary folder while the solve runs and copied next to
    # the result only when it is written (Result.write): an interrupted run leaves nothing in the
    # user's folder.  ``side_files`` (the result's path) is kept for callers; it no longer decides
    # where they are staged.
    inputs, base = _inputs(model, dataset, None)
    res = Result(claim=claim, status=Status.UNKNOWN, question=memorization_question(prompt_length, fmt(tol)),
                 inputs=inputs, solver=solver_info())
    res.extra.update(extra or {})
    res._base_dir = base
    return res


def base_dir(res: Result) -> str:
    """The folder of the result's side files."""
    return getattr(res, "_base_dir", ".")


def _inline_limit() -> int:
    """Numbers up to which inputs are embedded: the package's ``_INLINE_LIMIT``, read at call
    time (a test lowers it to exercise side files)."""
    from verify.provers import limitation
    return limitation._INLINE_LIMIT


def _inputs(model: Model, dataset: Dataset, base: Optional[str]) -> tuple[dict, str]:
    """``{"model", "dataset"}`` embedded when small, else content-addressed side files in ``base``
    (a new temporary folder when None); returns them and the folder."""
    limit = _inline_limit()
    small_model = model.n_parameters() <= limit
    small_data = sum(e.input.size for e in dataset.examples) * 2 <= limit
    if not (small_model and small_data) and base is None:
        import atexit
        import shutil
        import tempfile
        base = tempfile.mkdtemp(prefix="ptverify-")
        atexit.register(shutil.rmtree, base, True)
    dj = dataset_to_json(dataset)
    refs = {"model": embed(model_to_json(model)) if small_model else _write_side_model(model, base),
            "dataset": embed(dj) if small_data else _write_side_json(dj, base)}
    return refs, base or "."


def _write_side_model(model: Model, base: str) -> dict:
    """The model as ``<sha256 prefix>.npz`` in ``base`` (``.json`` when a weight is not binary64)."""
    import tempfile
    from verify.result import side_file
    os.makedirs(base, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=base, prefix=".tmp-", suffix=".npz")
    os.close(fd)
    try:
        save_model(model, tmp)
    except InputError:
        os.unlink(tmp)
        return _write_side_json(model_to_json(model), base)
    ref = side_file(tmp)
    final = os.path.join(base, ref["sha256"][:16] + ".npz")
    os.replace(tmp, final)
    return {"sha256": ref["sha256"], "file": os.path.basename(final)}


def _write_side_json(obj: dict, base: str) -> dict:
    """``obj`` as ``<sha256 prefix>.json`` (its canonical bytes) in ``base``."""
    from constructions.model import atomic_write_text
    from verify.checker.inputs import canonical_bytes
    data = canonical_bytes(obj)
    sha = hashlib.sha256(data).hexdigest()
    atomic_write_text(os.path.join(base, sha[:16] + ".json"), data.decode("ascii"))
    return {"sha256": sha, "file": sha[:16] + ".json"}


# --------------------------------------------------------------------------- the certificate

def certificate_body(model: Model, proof: Proof) -> dict:
    """The ``limitation-farkas`` body: hints only.  Members whose multipliers are zero everywhere
    are left out (the checker refuses unused members)."""
    g, blk = proof.group, proof.block
    if blk.form == "subspace":   # the one member that leaves the subspace
        keep = [next(i for i, m in enumerate(g.members) if [a - b for a, b in zip(m.z, g.x)] == blk.taus[0])]
    else:
        lams = proof.multipliers()
        keep = [i for i in range(len(g.members)) if any(any(lm[i]) for lm in lams)]
    body = {"form": blk.form, "query": fmt_vec(g.x),
            "members": [{"example": g.members[i].example, "position": g.members[i].position,
                         "z": fmt_vec(g.members[i].z)} for i in keep]}
    if blk.form == "subspace":
        body["phi"] = fmt_vec(blk.Phi[0])
        return body
    body["head"] = blk.head
    if blk.form == "direct-sum":
        body["gammas"] = [fmt_vec(blk.gammas[i]) for i in keep]
    elif len(model.layers[0].heads) > 1:  # one head: Phi is the identity and is not written
        body["Phi"] = [fmt_vec(r) for r in blk.Phi]
    body.update(_multiplier_fields(proof, keep))
    return body


def _multiplier_fields(proof: Proof, keep: list[int]) -> dict:
    """``alpha_pieces``, ``entropy_pieces`` or ``multipliers``: the kept members' rows."""
    def rows(lm):
        return [fmt_vec(lm[i]) for i in keep]
    if proof.alpha_pieces is not None:
        return {"alpha_pieces": [{"from": int(pc.lo), "to": None if pc.hi is None else int(pc.hi),
                                  "multipliers": rows(pc.lam)} for pc in proof.alpha_pieces]}
    if proof.entropy_pieces is not None:
        return {"entropy_pieces": [{"from": fmt(pc.lo), "to": None if pc.hi is None else fmt(pc.hi),
                                    "mu_lo": fmt(pc.mu_lo), "mu_hi": fmt(pc.mu_hi), "multipliers": rows(pc.lam)}
                                   for pc in sorted(proof.entropy_pieces, key=lambda pc: pc.lo)]}
    return {"multipliers": rows(proof.lam)}


def proof_method(proof: Proof) -> str:
    """The result's ``method`` line for a proof."""
    blk, g = proof.block, proof.group
    if proof.alpha_pieces is not None:
        m = "Proposition E: zero-score head, alpha = prompt length is an integer; Farkas certificate per alpha range"
    elif proof.entropy_pieces is not None:
        m = ("Proposition E: relaxation R plus the entropy relation g^T pi = alpha (log alpha - H), "
             "Farkas certificate per alpha range")
    else:
        m = {"subspace": "attention-subspace functional (L3)",
             "annihilator": "relaxation R, projected head system, Farkas certificate",
             "direct-sum": "relaxation R in head coordinates (stacked W_o of full column rank: heads decouple), "
                           "Farkas certificate"}[blk.form]
    if len(g.members) >= 2 and blk.form != "subspace":
        m += f"; {len(g.members)} examples share the query token (L1/L2)"
    return m


# --------------------------------------------------------------------------- vetting

_CHECK_ERRORS = (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError, AttributeError, ArithmeticError)


def _outcome(res: Result):
    """The trusted checker's own Outcome for this result's limitation certificate (raises Reject)."""
    from verify.checker import Context
    from verify.checker import limitation as trusted
    from verify.checker.inputs import load_input
    from verify.checker.questions import parse_question
    _, q = parse_question(res.question)
    model = load_input("model", res.inputs["model"], base_dir(res))
    ds = load_input("dataset", res.inputs["dataset"], base_dir(res), model.d)
    return trusted.check(Context(q, "proved", {"model": model, "dataset": ds}, res.certificate["body"], base_dir(res)))


def vet_proof(res: Result, layer=None) -> None:
    """"proved" only if the trusted checker accepts the whole result; ``reported`` holds what it
    derives (certified_min_error).  Otherwise "unknown", naming the checker's objection.

    A direct-sum certificate derives only k, which the prover computed with the checker's own
    norm bound on the same exact matrices (``layer`` given): then the whole result is checked once,
    with k reported (a k the checker does not derive would be a rejection, never a pass)."""
    from verify.checker import Reject, check_result
    res.status = Status.PROVED
    try:
        if layer is not None and res.certificate["body"].get("form") == "direct-sum":
            res.reported = {"mlp_lipschitz_bound": fmt(_checker_k(layer))}
        else:
            res.reported = dict(_outcome(res).derived)
        ok, msg = check_result(res.to_json(), base_dir(res))
    except (Reject, *_CHECK_ERRORS) as exc:
        ok, msg = False, str(exc)
    res.checks["certificate_checked"] = ok
    if ok:
        res.message = f"certificate accepted by the trusted checker: {msg}"
        return
    res.status, res.certificate, res.reported = Status.UNKNOWN, None, {}
    res.message = f"a certificate was found but the trusted checker rejected it: {msg}"


def _checker_k(layer):
    """The trusted checker's k for this layer (its norm bounds are remembered by content)."""
    hit = _CHECKER_K.get((id(layer.W_1), id(layer.W_2)))
    if hit is not None and hit[0] is layer.W_1 and hit[1] is layer.W_2:
        return hit[2]
    from verify.checker.limitation import norm_upper
    return norm_upper(_checker_mat(layer.W_1)) * norm_upper(_checker_mat(layer.W_2))


#: the last layer's checker k, by the identity of its (unchanged) weight arrays
_CHECKER_K: dict = {}

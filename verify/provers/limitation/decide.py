"""The decision flow of the single-layer prover: a short sequence of stages under one clock.

1. validate the question; real layers and targets at the attention block go to
   :mod:`verify.provers.real`; multi-layer models go to :mod:`verify.provers.multilayer`;
2. the envelope, the MLP's Lipschitz bound k, the groups and their preimages (:mod:`.groups`);
3. early decisions: nothing constrained, attention that adds nothing (:mod:`.attention_free`),
   an MLP not certified injective (witness search only);
4. relaxation R per block with Farkas certificates (:mod:`.relaxation`, :mod:`.farkas`), then
   Proposition E (:mod:`.prop_e`, :mod:`.entropy`) for a single softmax head, and R with all
   heads jointly (QF_NRA) for small overlapping heads;
5. a proof goes to the trusted checker (:mod:`.results`); otherwise the witness search
   (:mod:`.witness`) and a message saying why nothing was decided.

When the clock runs out in a stage the status is "timeout" and ``info.stage`` names the stage.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Optional

from constructions.arrays import blas_threads
from constructions.model import Dataset, InputError, Model
from verify.provers.exact import EXP_ARG_LIMIT, ExpRangeError, approx
from verify.provers.limitation.attention_free import attention_free, attention_free_decided
from verify.provers.limitation.blocks import SMALL_D, direct_sum
from verify.provers.limitation.clock import Clock, OutOfTime
from verify.provers.limitation.context import Check
from verify.provers.limitation.entropy import entropy_proof
from verify.provers.limitation.farkas import Proof
from verify.provers.limitation.groups import build_groups
from verify.provers.limitation.layer import ExactLayer
from verify.provers.limitation.prop_e import prop_e_zero_score
from verify.provers.limitation.relaxation import nonlinear_R, relaxation_proof
from verify.provers.limitation.results import (CERT_KIND, certificate_body, mlp_certificate, new_result, proof_method,
                                               vet_proof)
from verify.progress import LogList
from verify.provers.limitation.witness import timed_search, with_witness, witness_length_ok
from verify.result import Result, Status, certificate

__all__ = ["check_memorization", "prove_limitation"]


@dataclass
class _Options:
    """The caller's settings of one check (see :func:`check_memorization`)."""
    prompt_length: object
    tolerance: object
    timeout: float
    artifacts: Optional[str]
    claim: str
    search_witness: bool
    inputs_extra: Optional[dict]
    side_files: Optional[str]
    nonlinear: bool
    prompt_norm: object = None


def check_memorization(model: Model, dataset: Dataset, prompt_length="any", tolerance=Fraction(0),
                       timeout: float = 60.0, artifacts: Optional[str] = None, claim: str = "L1",
                       search_witness: bool = True, inputs_extra: Optional[dict] = None,
                       side_files: Optional[str] = None, nonlinear: bool = True, progress=None,
                       prompt_norm=None) -> Result:
    """Decide whether some prompt memorizes ``dataset`` (single-layer ``model``) within ``timeout``
    seconds for everything but the trusted checker's final check.

    Returns "proved" only with a certificate the trusted checker (:mod:`verify.checker`) accepts,
    "memorized" only with a witness it replays; otherwise "unknown", or "timeout" when a stage runs
    out of time (``info.stage`` names it).  The result is a ``ptverify-result/2`` envelope
    (question, inputs, certificate).  Models and datasets too large to embed are written as
    content-addressed side files (``<sha256 prefix>.npz`` / ``.json``) in the folder of
    ``side_files`` (default: a temporary folder), where the result file must be written for
    ``ptverify replay`` to find them.  ``inputs_extra`` goes to ``info``.  ``progress`` (a
    :class:`verify.progress.Progress`) is told each stage and head block.  ``prompt_norm`` (R > 0)
    asks about prompts whose rows have 2-norm at most R: real layers only (a textbook layer's
    limitations hold for prompts of every norm)."""
    if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
        raise InputError("--timeout", "a finite number of seconds > 0", repr(timeout)[:40])
    clock = Clock(timeout, progress)
    opts = _Options(prompt_length, tolerance, timeout, artifacts, claim, search_witness, inputs_extra, side_files,
                    nonlinear, prompt_norm)
    try:
        with blas_threads(1):
            return _decide(model, dataset, opts, clock)
    except OutOfTime as exc:
        res = clock.res
        res.status, res.certificate, res.reported = Status.TIMEOUT, None, {}
        res.extra["stage"] = exc.stage
        res.message = f"ran out of time (--timeout {timeout:g} s) in stage '{exc.stage}'; nothing is claimed"
        res.method = res.method or f"time limit reached in stage '{exc.stage}'"
        res.extra.setdefault("log", []).append(f"timeout in stage '{exc.stage}' after {timeout:g} s")
        res.seconds["solve"] = time.perf_counter() - clock.start - res.seconds.get("build", 0.0)
        return res


def _decide(model: Model, dataset: Dataset, o: _Options, clock: Clock) -> Result:
    import z3
    t0 = time.perf_counter()
    tol = _validated(model, dataset, o.prompt_length, o.tolerance)
    if not model.is_plain or dataset.at != "output":
        return _real(model, dataset, o, tol)
    if o.prompt_norm is not None:
        raise InputError("--prompt-norm", "no value for a textbook (ptverify-model/1) single-layer model with "
                         "targets at the layer output (its limitations hold for prompts of every norm)",
                         repr(o.prompt_norm)[:40])
    if len(model.layers) > 1:
        return _multilayer(model, dataset, o, tol)
    c = _start(z3, model, dataset, o, tol, clock, t0)
    if _settled_early(c, o.search_witness):
        return c.res
    t1 = time.perf_counter()
    proof = _proof(c)
    if c.res.status == Status.MEMORIZED:          # Proposition E's exact witness
        c.res.seconds["solve"] = time.perf_counter() - t1
        return c.res
    if o.nonlinear and c.heads > 1 and c.direct_sum is None and model.d <= 6 and c.softmax:
        _nonlinear_stage(c, proof)
    c.res.seconds["solve"] = time.perf_counter() - t1
    if proof is not None:
        return _proved(c, proof)
    return _undecided(c, o.search_witness)


def _validated(model: Model, dataset: Dataset, prompt_length, tolerance) -> Fraction:
    """The tolerance as a Fraction, once the question's fields and the tokens' length are legal."""
    tol = Fraction(tolerance)
    if tol < 0:
        raise InputError("--tolerance", "a number >= 0", str(tolerance))
    if prompt_length != "any" and (not isinstance(prompt_length, int) or not 1 <= prompt_length <= 1 << 40):
        raise InputError("--prompt-length", "a positive integer of at most 2**40, or 'any'", repr(prompt_length)[:40])
    for i, e in enumerate(dataset.examples):
        if e.input.shape[1] != model.d:
            raise InputError(f"examples[{i}].input", f"tokens of d = {model.d} entries (the model's d)",
                             f"{e.input.shape[1]} entries")
    return tol


def _multilayer(model: Model, dataset: Dataset, o: _Options, tol: Fraction) -> Result:
    import verify.provers.multilayer as multilayer
    fn = getattr(multilayer, "check_multilayer", None)
    if fn is None:
        return Result(claim=o.claim, status=Status.UNKNOWN, message="multi-layer models are not supported by this build")
    return fn(model, dataset, prompt_length=o.prompt_length, tolerance=tol, timeout=o.timeout)


def _real(model: Model, dataset: Dataset, o: _Options, tol: Fraction) -> Result:
    """Real layers (``ptverify-model/2``) and targets at the attention block: the real-layer pair
    theorem (proofs/real_layers.md) for "at": "attention"; "unknown" with the reason otherwise
    (a certificate for the textbook layer says nothing about a real one)."""
    from verify.provers.real import check_real, unsupported_reason
    t0 = time.perf_counter()
    res = check_real(model, dataset, prompt_length=o.prompt_length, tolerance=tol, timeout=o.timeout,
                     claim=o.claim, side_files=o.side_files, inputs_extra=o.inputs_extra, prompt_norm=o.prompt_norm)
    if res.status != Status.UNKNOWN or not o.search_witness or unsupported_reason(model, dataset) is not None:
        return res
    # no pair proof: the witness search at the attention site ("memorized" only if the checker replays it)
    from verify.provers.real.witness import real_witness
    left = o.timeout - (time.perf_counter() - t0)
    why = res.message
    if tol == 0:
        res.message = (f"{why}; no witness is searched at tolerance 0: the trusted replay of a softmax layer "
                       "encloses exp and square roots in intervals of positive width, which never lie within 0")
        return res
    if left > 0.5 and real_witness(res, model, dataset, tol, o.prompt_length, budget=min(20.0, left)):
        return res
    res.message = f"{why}; no witness prompt replayed within the tolerance either"
    return res


def _start(z3, model: Model, dataset: Dataset, o: _Options, tol: Fraction, clock: Clock, t0: float) -> Check:
    """The envelope, the MLP certificate and the groups (the "build" time)."""
    clock.progress.stage("inputs")
    res = new_result(model, dataset, o.claim, o.prompt_length, tol, o.side_files, o.inputs_extra)
    clock.res = res
    log: list = LogList(clock.progress)
    res.extra["log"] = log
    lap = _Lap(res, t0)
    lap("inputs")
    clock.progress.stage("MLP norm bound")
    mlpc = mlp_certificate(model.layers[0])
    lap("mlp_bound")
    res.checks["mlp_injective"] = bool(mlpc["injective"])
    res.extra["assumptions"] = {"mlp_lipschitz_bound": approx(mlpc["k"]), "mlp_bound_methods": mlpc["methods"]}
    clock.progress.stage("exact layer")
    ex = ExactLayer(model)
    lap("exact_layer")
    groups = build_groups(model, dataset, ex, clock)
    lap("preimages")
    res.seconds["build"] = time.perf_counter() - t0
    return Check(z3, model, dataset, o.prompt_length, tol, clock, res, ex, groups, log, o.artifacts, k=mlpc["k"])


class _Lap:
    """Adds the seconds since the previous lap to ``info.stages[stage]`` (finer than ``seconds``)."""

    def __init__(self, res: Result, t: float):
        self.stages, self.t = res.extra.setdefault("stages", {}), t

    def __call__(self, stage: str) -> None:
        t = time.perf_counter()
        self.stages[stage] = round(self.stages.get(stage, 0.0) + t - self.t, 4)
        self.t = t


def _settled_early(c: Check, search_witness: bool) -> bool:
    """Nothing constrained (any prompt), attention that adds nothing, or an MLP not certified
    injective (no limitation is claimed; the witness search may still decide)."""
    res = c.res
    if not c.groups:
        res.message = "the dataset constrains no output; every prompt memorizes it"
        if witness_length_ok(c.prompt_length, c.log):
            K = 1 if c.prompt_length == "any" else c.prompt_length
            with_witness(res, c.model, c.dataset, [[0] * c.model.d] * K, c.tol)
        return True
    if attention_free(c.model) and attention_free_decided(c):
        return True
    if not c.k < 1:        # the certified bound k < 1 is what makes the MLP injective
        res.message = (f"assumption 'injective MLP' not certified: the rigorous bound ||W_1|| ||W_2|| <= "
                       f"{approx(c.k)} is not < 1; no limitation is claimed")
        res.checks["assumption_failed"] = "injective MLP"
        if search_witness:
            timed_search(res, c.model, c.dataset, c.tol, c.prompt_length, c.clock)
        return True
    return False


def _proof(c: Check) -> Optional[Proof]:
    """Relaxation R per block, then (single softmax head) Proposition E: zero-score queries (exact
    targets; may find a witness instead, kept in ``c.res``) and the entropy relation."""
    h = c.heads
    lap = _Lap(c.res, time.perf_counter())
    # head coordinates: needed for several heads, and for one large head (no exact Phi there)
    c.direct_sum = direct_sum(c.model) if (h > 1 or c.model.d > SMALL_D) and c.softmax else None
    c.res.extra["assumptions"]["direct_sum"] = (c.direct_sum is not None) if h > 1 else "single head"
    lap("direct_sum")
    proof = relaxation_proof(c)
    lap("relaxation")
    if proof is None and h == 1 and c.softmax and c.tol == 0:
        proof = prop_e_zero_score(c)
        if c.res.status == Status.MEMORIZED:
            return None
    if proof is None and h == 1 and c.softmax:
        proof = entropy_proof(c)
    return proof


def _nonlinear_stage(c: Check, proof: Optional[Proof]) -> None:
    """R with all heads jointly (recorded under ``solver.nonlinear_R``; a timeout only matters
    when there is no proof yet)."""
    try:
        ans = nonlinear_R(c)
    except ExpRangeError as exc:
        ans = f"not tried ({exc})"
    except OutOfTime:
        if proof is None:
            raise
        ans = "timeout"
    c.res.solver["nonlinear_R"] = ans
    c.log.append(f"nonlinear R (QF_NRA, all heads jointly): {ans}")


def _proved(c: Check, proof: Proof) -> Result:
    """The certificate, submitted to the trusted checker ("proved" only if it accepts)."""
    res = c.res
    res.certificate = certificate(CERT_KIND, certificate_body(c.model, proof))
    res.method = proof_method(proof)
    if "nonlinear_R" in res.solver:
        res.method += f"; Z3 QF_NRA on R with all heads jointly: {res.solver['nonlinear_R']}"
    c.clock.progress.stage("trusted checker")
    t2 = time.perf_counter()
    vet_proof(res, c.model.layers[0])
    res.seconds["check"] = time.perf_counter() - t2
    res.extra.setdefault("stages", {})["check"] = round(res.seconds["check"], 4)
    return res


def _undecided(c: Check, search_witness: bool) -> Result:
    """No proof: the witness search, then a message saying why nothing was decided."""
    res = c.res
    if search_witness:
        t3 = time.perf_counter()
        timed_search(res, c.model, c.dataset, c.tol, c.prompt_length, c.clock)
        res.seconds["witness"] = time.perf_counter() - t3
    if res.status == Status.UNKNOWN and not res.message:
        res.message = _unknown_message(c)
    return res


def _unknown_message(c: Check) -> str:
    if c.refused:
        return (f"attention scores up to {approx(max(c.refused))} lie beyond the trusted checker's "
                f"exponential range (|s| <= {EXP_ARG_LIMIT}), so no head certificate it could check exists "
                "for those blocks; nothing else decided the question")
    if c.res.solver.get("nonlinear_R") == "unsat":
        return ("Z3 (QF_NRA) reports relaxation R infeasible with all heads jointly, but no exact "
                "certificate was found (every head's output space lies in the span of the others, so no "
                "projection isolates a head); 'proved' is not claimed without a certificate")
    msg = "relaxation R is feasible for every block tried and no witness prompt was found"
    if c.model.layers[0].kind == "hardmax":
        msg += ("; for hardmax layers only the attention-subspace argument (L3) is implemented: "
                "Lemma D's softmax relaxation does not apply")
    return msg


def prove_limitation(d: int = 3, heads: int = 1, head_size: Optional[int] = None, mlp_width: Optional[int] = None,
                     seed: int = 0, kind: str = "softmax", margin: float = 0.5, artifacts: Optional[str] = None,
                     timeout: float = 60.0, examples: Optional[int] = None,
                     side_files: Optional[str] = None, nonlinear: bool = True,
                     progress=None) -> tuple[Result, Model, Dataset]:
    """Build a random single-layer model meeting the assumptions and the L1 dataset, and prove it."""
    from constructions.datasets import l1_dataset, random_model
    from verify.progress import ensure
    ensure(progress).stage("random model and L1 dataset")
    t0 = time.perf_counter()
    with blas_threads(1):
        model = random_model(d, heads=heads, head_size=head_size, mlp_width=mlp_width, seed=seed, kind=kind)
        ds = l1_dataset(model, seed=seed, margin=margin, examples=examples)
    tb = time.perf_counter() - t0
    extra = {"seed": seed, "builder": {"d": d, "heads": heads, "head_size": model.meta["head_size"],
                                       "mlp_width": model.meta["mlp_width"], "kind": kind, "margin": margin}}
    res = check_memorization(model, ds, artifacts=artifacts, timeout=timeout, claim="L1",
                             search_witness=False, inputs_extra=extra, side_files=side_files, nonlinear=nonlinear,
                             progress=progress)
    res.seconds["build"] = res.seconds.get("build", 0.0) + tb
    res.extra.setdefault("stages", {})["instance"] = round(tb, 4)
    return res, model, ds

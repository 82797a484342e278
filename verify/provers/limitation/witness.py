"""Witness search and vetting: a prompt counts only once the trusted checker replays it.

The search is gradient prompt tuning in float64 (L-BFGS) within a time budget; a float prompt
proposes rationals (its exact binary64 value, then dyadic roundings, which replay exactly where the
model allows), and :func:`with_witness` keeps the first one the trusted checker accepts for the
result's own question, exactly or with rigorous enclosures within the tolerance.
"""
from __future__ import annotations

import math
import time
from fractions import Fraction
from typing import Optional

import numpy as np

from constructions.forward import forward_torch
from constructions.model import Dataset, Model, as_float
from verify.provers.exact import fmt
from verify.provers.limitation.clock import Clock, OutOfTime
from verify.provers.limitation.layer import dyadic
from verify.provers.limitation.results import WITNESS_KIND, base_dir
from verify.result import Result, Status, certificate

__all__ = ["MAX_WITNESS_TOKENS", "example_batches", "witness_length_ok", "with_witness", "search_witness", "timed_search",
           "replay_candidates"]

#: longest witness prompt the prover writes (the checker replays every token of it)
MAX_WITNESS_TOKENS = 4096


def witness_length_ok(prompt_length, log: list) -> bool:
    """May a witness of this length be written (at most MAX_WITNESS_TOKENS tokens)?"""
    if prompt_length == "any" or prompt_length <= MAX_WITNESS_TOKENS:
        return True
    log.append(f"no witness of length {prompt_length} is built (at most {MAX_WITNESS_TOKENS} tokens)")
    return False


def _witness_dict(prompt) -> dict:
    """The ``prompt-witness`` body: exact rationals (a float becomes its exact binary64 value)."""
    return {"prompt": [[fmt(Fraction(v)) for v in row] for row in prompt]}


def with_witness(res: Result, model, dataset, prompt, tol: Optional[Fraction] = None) -> bool:
    """Keep ``prompt`` as the witness, and set "memorized", only if the trusted checker accepts it
    for the result's own question (the tolerance is the question's; ``tol`` is not used)."""
    from verify.checker import check_result
    before = (res.status, res.certificate, res.reported)
    res.status, res.certificate, res.reported = Status.MEMORIZED, certificate(WITNESS_KIND, _witness_dict(prompt)), {}
    ok, msg = check_result(res.to_json(), base_dir(res))
    if not ok:
        res.status, res.certificate, res.reported = before
        res.extra.setdefault("rejected_witnesses", []).append(msg[:300])
        return False
    res.checks["witness_replayed"] = True
    res.method = res.method or "witness prompt (replayed by the trusted checker)"
    res.message = msg
    return True


def timed_search(res: Result, model: Model, dataset: Dataset, tol: Fraction, prompt_length, clock: Clock) -> None:
    """The witness search within what is left of the clock (at most 20 s); OutOfTime when the
    clock, not the search's own schedule, ended it without a witness."""
    clock.progress.stage("witness search")
    if clock.left() < 0.5:               # torch's start-up alone takes longer than that
        raise OutOfTime("witness search")
    search_witness(res, model, dataset, tol, prompt_length, budget=min(20.0, clock.left()))
    if res.status != Status.MEMORIZED and clock.left() <= 0:
        raise OutOfTime("witness search")


def search_witness(res: Result, model: Model, dataset: Dataset, tol: Fraction, prompt_length,
                   budget: float = 20.0) -> None:
    """Gradient prompt tuning in float64 (L-BFGS) within a time budget.  A prompt counts only if
    the trusted checker replays it within the tolerance (exactly, or with rigorous enclosures)."""
    if model.d > 64 or len(dataset.examples) > 64 or not witness_length_ok(prompt_length, []):
        return
    import torch
    t_end = time.perf_counter() + budget
    batches = example_batches(model, dataset)
    lengths = [prompt_length] if prompt_length != "any" else [1, 2, 4]
    best = None
    for L in lengths:
        for seed in range(2):
            if time.perf_counter() > t_end:
                break
            P = torch.randn(L, model.d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64,
                            requires_grad=True)
            err = _tune(model, batches, P, t_end)
            if not math.isfinite(err):    # float64 overflows on this model: the search cannot help
                res.extra["witness_search"] = {"best_squared_error": None, "note": "float64 loss not finite"}
                return
            if best is None or err < best[0]:
                best = (err, P.detach().numpy().copy())
            if err <= max(float(tol) ** 2, 1e-24) and replay_candidates(res, model, dataset, best[1], tol, t_end):
                res.extra["witness_search"] = {"best_squared_error": err}
                return
    if best is not None:
        res.extra["witness_search"] = {"best_squared_error": best[0]}
        replay_candidates(res, model, dataset, best[1], tol, t_end)


def example_batches(model: Model, dataset: Dataset) -> list:
    """The examples as float64 tensors (X, Y, mask of constrained outputs), one batch per length."""
    import torch
    by_len: dict = {}
    for e in dataset.examples:
        by_len.setdefault(e.input.shape[0], []).append(e)
    batches = []
    for exs in by_len.values():
        X = torch.tensor(np.stack([as_float(np.asarray(e.input)) for e in exs]))
        mask = torch.tensor([[y is not None for y in e.output] for e in exs])
        Y = torch.tensor(np.stack([np.stack([np.zeros(model.d) if y is None else as_float(np.asarray(y))
                                             for y in e.output]) for e in exs]))
        batches.append((X, Y, mask))
    return batches


def _tune(model: Model, batches: list, P, t_end: float) -> float:
    """A few L-BFGS rounds on the squared error; returns the final squared error (float64)."""
    import torch
    opt = torch.optim.LBFGS([P], max_iter=100, line_search_fn="strong_wolfe", tolerance_grad=1e-16,
                            tolerance_change=1e-20)

    def objective():
        loss = torch.zeros((), dtype=torch.float64)
        for X, Y, mask in batches:
            out = forward_torch(model, X, P)
            loss = loss + (((out - Y) ** 2).sum(-1) * mask).sum()
        return loss

    def closure():
        if time.perf_counter() > t_end:
            raise _TimeUp
        opt.zero_grad()
        loss = objective()
        loss.backward()
        return loss
    for _ in range(4):
        if time.perf_counter() > t_end:
            break
        try:
            opt.step(closure)
        except _TimeUp:
            break
    with torch.no_grad():
        return float(objective())


class _TimeUp(Exception):
    """The witness search's budget ran out inside an L-BFGS step."""


def replay_candidates(res, model, dataset, Pf: np.ndarray, tol: Fraction, t_end: Optional[float] = None) -> bool:
    """The float prompt's exact value, then its dyadic roundings (simpler rationals, which replay
    exactly where the model allows): the first the trusted checker accepts is kept.  No new
    candidate is tried after ``t_end``."""
    if not np.all(np.isfinite(Pf)):      # L-BFGS diverged (huge scores): nothing to replay
        return False
    cands = [[[Fraction(float(v)) for v in row] for row in Pf]]
    cands += [[[dyadic(float(v), k) for v in row] for row in Pf] for k in range(6, 54, 4)]
    for n, cand in enumerate(cands):
        if n and t_end is not None and time.perf_counter() > t_end:
            return False
        if with_witness(res, model, dataset, cand, tol):
            return True
    return False

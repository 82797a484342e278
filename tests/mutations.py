"""Mutation helpers shared by the certificate tests: every number and field of a result is
changed, certificates are swapped, and each change must be rejected by the trusted checker.

``record(kind, tried, rejected)`` keeps the counts; ``tests/conftest.py`` prints them at the end
of the run and ``PTVERIFY_MUTATION_REPORT=path`` writes them as JSON.
"""
from __future__ import annotations

import copy
import json
import os
from fractions import Fraction
from typing import Any, Iterator

from verify.checker import check_result, statement

__all__ = ["leaves", "set_at", "delete_at", "perturb", "envelope_mutations", "body_mutations",
           "assert_all_rejected", "record", "COUNTS"]

#: kind -> [tried, rejected]
COUNTS: dict[str, list[int]] = {}


def record(kind: str, tried: int, rejected: int) -> None:
    c = COUNTS.setdefault(kind, [0, 0])
    c[0] += tried
    c[1] += rejected
    path = os.environ.get("PTVERIFY_MUTATION_REPORT")
    if path:
        with open(path, "w") as fh:
            json.dump(COUNTS, fh, indent=1)


def leaves(obj: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """Every scalar leaf (numbers, strings, bools, None) with its path."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from leaves(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from leaves(v, path + (i,))
    else:
        yield path, obj


def set_at(obj: Any, path: tuple, value: Any) -> Any:
    out = copy.deepcopy(obj)
    cur = out
    for p in path[:-1]:
        cur = cur[p]
    cur[path[-1]] = value
    return out


def delete_at(obj: Any, path: tuple) -> Any:
    out = copy.deepcopy(obj)
    cur = out
    for p in path[:-1]:
        cur = cur[p]
    del cur[path[-1]]
    return out


def _as_q(v: Any):
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return Fraction(v)
    if isinstance(v, str):
        try:
            return Fraction(v)
        except (ValueError, ZeroDivisionError):
            return None
    return None


def perturb(v: Any) -> list:
    """A few wrong values for a leaf: numbers moved up, down and negated; strings changed;
    NaN/inf for floats; the same JSON type kept where possible."""
    q = _as_q(v)
    if q is not None:
        cands = [q + 1, q - Fraction(1, 3), -q - 1 if q != 0 else Fraction(1), q * 2 + Fraction(1, 7)]
        out = []
        for c in cands:
            if isinstance(v, bool):
                continue
            if isinstance(v, int):
                out.append(int(c) if c.denominator == 1 else int(c) + 1)
            elif isinstance(v, float):
                out.append(float(c))
            else:
                out.append(str(c))
        if isinstance(v, float):
            out += [float("nan"), float("inf")]
        return [o for o in out if o != v]
    if isinstance(v, bool):
        return [not v]
    if isinstance(v, str):
        return [v + "x", ""]
    if v is None:
        return [0]
    return []


INVALID = {"prompt_length": [0, -1, None, "some", 1.5], "tolerance": [-1, "-1/3", "nan", None, True],
           "prompt_norm": [0, -1, "x"]}
INTEGER_FIELDS = ("d", "n", "m", "N", "heads", "head_size", "mlp_width")


def question_mutations(q: dict, status: str) -> Iterator[tuple[str, dict]]:
    """Questions the result's certificate must NOT support: invalid values, and changes that make
    the claim strictly stronger (a weaker claim may legitimately still hold, so it is not
    generated: e.g. a larger tolerance for a witness, a fixed length for an any-length proof)."""
    def with_(key, val):
        return dict(q, **{key: val})
    for key in q:
        if key == "kind":
            continue
        for i, bad in enumerate(INVALID.get(key, [-1, None, "x"])):
            yield f"question.{key} invalid#{i}", with_(key, bad)
        if key in INTEGER_FIELDS:
            yield f"question.{key}+1", with_(key, q[key] + 1)
    yield "question.kind", with_("kind", "bounds" if q["kind"] != "bounds" else "memorization")
    if q["kind"] == "memorization":
        tol = Fraction(q["tolerance"])
        K, R = q["prompt_length"], q.get("prompt_norm")
        if status == "proved":
            yield "question.tolerance larger", with_("tolerance", str(tol + 1))
            if K != "any":
                yield "question.prompt_length any", with_("prompt_length", "any")
            if R is not None:
                yield "question.prompt_norm larger", with_("prompt_norm", str(Fraction(R) * 1000))
                yield "question.prompt_norm none", {k: v for k, v in q.items() if k != "prompt_norm"}
        else:
            if tol:
                yield "question.tolerance 0", with_("tolerance", "0")
            yield "question.prompt_length other", with_("prompt_length", (K + 1) if K != "any" else 10**6)
            yield "question.prompt_norm tiny", with_("prompt_norm", "1/1000000000")
    if "eps" in q and status == "verified":
        yield "question.eps smaller", with_("eps", str(Fraction(q["eps"]) / 1000))
    if "target" in q:
        for t in ("token-mix", "smooth", "relu-net"):
            if t != q["target"]:
                yield f"question.target={t}", with_("target", t)


def envelope_mutations(res: dict) -> Iterator[tuple[str, dict]]:
    """Mutations of everything outside the certificate body."""
    for st in ("proved", "memorized", "verified", "refuted", "unknown", "timeout", "error"):
        if st != res["status"]:
            yield f"status={st}", dict(res, status=st)
            try:  # the same, with the statement re-derived, so only the status-kind table can object
                yield f"status={st} restated", dict(res, status=st, statement=statement(res["question"], st))
            except Exception:  # noqa: BLE001 - an unparseable question is mutated elsewhere
                pass
    yield "format", dict(res, format="ptverify-result/1")
    yield "unknown top-level field", dict(res, extra_field=1)
    yield "statement", dict(res, statement=res["statement"] + " (edited)")
    for name, q in question_mutations(res["question"], res["status"]):
        yield name, dict(copy.deepcopy(res), question=q)
    yield "question unknown field", set_at(res, ("question", "extra"), 1)
    cert = res.get("certificate")
    if isinstance(cert, dict):
        yield "certificate.format", set_at(res, ("certificate", "format"), "ptverify-certificate/0")
        for k in ("limitation-farkas", "prompt-witness", "multilayer-injectivity", "universality-dp-bound",
                  "bounds-table", "lora-witness", "loss-bound", "experiment-consistency", "nonsense"):
            if k != cert["kind"]:
                yield f"certificate.kind={k}", set_at(res, ("certificate", "kind"), k)
        yield "certificate removed", dict(res, certificate=None)
    for name, ref in res["inputs"].items():
        yield f"inputs.{name}.sha256", set_at(res, ("inputs", name, "sha256"), "0" * 64)
        yield f"inputs.{name} removed", delete_at(res, ("inputs", name))
        if "embedded" in ref:
            nums = [(p, v) for p, v in leaves(ref["embedded"]) if _as_q(v) is not None and "meta" not in p]
            for p, v in nums[:3] + nums[-3:]:
                yield f"inputs.{name}.embedded{list(p)}", set_at(res, ("inputs", name, "embedded") + p, perturb(v)[0])
            outs = [(p, v) for p, v in nums if "output" in p]
            if outs and res["status"] == "memorized":
                # a target moved and the input re-hashed: a different instance, which the witness
                # must not memorize (only targets: a model may ignore some input entries, and a
                # proof may survive a moved target; the per-kind tests cover those)
                from verify.checker import canonical_sha256
                p, v = outs[len(outs) // 2]
                m = set_at(res, ("inputs", name, "embedded") + p, perturb(v)[0])
                m["inputs"][name]["sha256"] = canonical_sha256(m["inputs"][name]["embedded"])
                yield f"inputs.{name}.embedded{list(p)} rehashed", m
        if "file" in ref:
            yield f"inputs.{name}.file missing", set_at(res, ("inputs", name, "file"), "no-such-file.npz")
            yield f"inputs.{name}.file path", set_at(res, ("inputs", name, "file"), "../" + ref["file"])
    yield "reported forged", dict(res, reported=dict(res.get("reported", {}), certified_min_error="1000"))


def body_mutations(res: dict) -> Iterator[tuple[str, dict]]:
    """Every leaf of the certificate body perturbed, every key removed, an unknown key added."""
    body = res["certificate"]["body"]
    for p, v in leaves(body):
        for i, w in enumerate(perturb(v)):
            yield f"body{list(p)}#{i}", set_at(res, ("certificate", "body") + p, w)
    if isinstance(body, dict):
        for k in body:
            yield f"body.{k} removed", delete_at(res, ("certificate", "body", k))
        yield "body unknown field", set_at(res, ("certificate", "body", "extra_field"), 1)


def assert_all_rejected(kind: str, res: dict, mutations, base_dir: str = ".", allow: tuple = ()) -> tuple[int, int]:
    """Check every mutation is rejected; ``allow`` lists name prefixes known to be harmless
    (each must be justified where it is passed).  Records and returns (tried, rejected)."""
    ok0, msg0 = check_result(res, base_dir)
    assert ok0, f"the unmutated result must hold: {msg0}"
    tried = rejected = 0
    survivors = []
    for name, mres in mutations:
        if any(name.startswith(a) for a in allow):
            continue
        tried += 1
        ok, msg = check_result(mres, base_dir)
        if ok:
            survivors.append(name)
        else:
            rejected += 1
    record(kind, tried, rejected)
    assert not survivors, f"{len(survivors)} of {tried} mutations were accepted: {survivors[:10]}"
    return tried, rejected

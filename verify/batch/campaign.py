"""The soundness campaign: generated instances with known answers (:mod:`constructions.instances`)
through ``ptverify batch``, every verdict compared with the known answer, every ``proved`` and
``memorized`` re-checked by the trusted checker, and every exported SMT-LIB2 query solved by Z3
and by cvc5.

    python -m verify.batch.campaign generate --n 10000 --seed 0 --out C     # C/manifest.jsonl, C/answers.jsonl
    ptverify batch C/manifest.jsonl --out C/batch --workers 2
    python -m verify.batch.campaign score C                                 # C/campaign.json

(``ptverify campaign generate|score`` are the same commands; ``... campaign all`` does the three.)

A *wrong verdict* is ``proved`` on a memorizable instance or ``memorized`` on an unmemorizable one,
or a ``proved``/``memorized`` whose result file the trusted checker rejects; instances whose
answer is unknown to us only count towards the decided share.  The goal is 0 wrong verdicts.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from fractions import Fraction
from typing import Optional

from constructions.model import atomic_write_text, save_dataset, save_model

__all__ = ["generate_campaign", "score_campaign", "CAMPAIGN_FORMAT", "main"]

CAMPAIGN_FORMAT = "ptverify-campaign/1"
DECIDED = {"memorizable": "memorized", "unmemorizable": "proved"}
WRONG = {"memorizable": "proved", "unmemorizable": "memorized"}


def _frac_text(q: Fraction) -> str:
    return str(q.numerator) if q.denominator == 1 else f"{q.numerator}/{q.denominator}"


def generate_campaign(out: str, n: int, seed: int = 0, max_d: int = 16, timeout: float = 20.0,
                      job_timeout: float = 120.0, classes: Optional[list] = None, artifacts: bool = True,
                      progress=None, start: int = 0) -> dict:
    """Write ``n`` instances (model and dataset files), ``manifest.jsonl`` (one ``check`` job
    each) and ``answers.jsonl`` (class and known answer) into ``out``.  With ``start`` > 0 the
    instances ``start ..`` of the same sequence are added to the files already there (a campaign
    generated and run in chunks)."""
    from constructions.instances import generate
    inst_dir = os.path.join(out, "instances")
    os.makedirs(inst_dir, exist_ok=True)
    jobs, answers = [], []
    if start > 0:
        jobs = [j for j in _read_jsonl(os.path.join(out, "manifest.jsonl")) if int(j["id"][:5]) < start]
        answers = [a for a in _read_jsonl(os.path.join(out, "answers.jsonl")) if int(a["id"][:5]) < start]
        if len(jobs) != start or len(answers) != start:
            raise ValueError(f"{out} holds {len(jobs)} instances, not the {start} that --start says")
    for k, inst in enumerate(generate(n, seed=seed, classes=classes, max_d=max_d, start=start)):
        mp = os.path.join("instances", inst.id + ".model.json")
        dp = os.path.join("instances", inst.id + ".dataset.json")
        save_model(inst.model, os.path.join(out, mp))
        save_dataset(inst.dataset, os.path.join(out, dp))
        job = {"id": inst.id, "command": "check", "model": mp, "dataset": dp,
               "prompt_length": str(inst.prompt_length), "tolerance": _frac_text(inst.tolerance),
               "timeout": timeout, "job_timeout": job_timeout}
        if artifacts:
            job["artifacts"] = True
        jobs.append(job)
        answers.append({"id": inst.id, "class": inst.cls, "answer": inst.answer, "d": inst.model.d,
                        "heads": len(inst.model.layers[0].heads), "layers": len(inst.model.layers),
                        "causal": inst.model.causal, "prompt_length": str(inst.prompt_length),
                        "tolerance": _frac_text(inst.tolerance), "note": inst.note})
        if progress and (k + 1) % 500 == 0:
            progress(f"generated {k + 1} of {n}")
    atomic_write_text(os.path.join(out, "manifest.jsonl"), "".join(json.dumps(j) + "\n" for j in jobs))
    atomic_write_text(os.path.join(out, "answers.jsonl"), "".join(json.dumps(a) + "\n" for a in answers))
    meta = {"n": start + n, "seed": seed, "max_d": max_d, "timeout": timeout, "job_timeout": job_timeout}
    atomic_write_text(os.path.join(out, "campaign-params.json"), json.dumps(meta, indent=1))
    return meta


def _read_jsonl(path: str) -> list:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(s) for s in fh if s.strip()]


def score_campaign(out: str, batch_out: Optional[str] = None, cross: bool = True, smt_ms: int = 10_000) -> dict:
    """Compare every recorded verdict with its known answer, re-check every proved/memorized with
    the trusted checker, cross-check the exported SMT-LIB2 queries; write ``out/campaign.json``."""
    from verify.batch.jobs import load_record
    from verify.checker import check_file
    batch_out = batch_out or os.path.join(out, "batch")
    answers = _read_jsonl(os.path.join(out, "answers.jsonl"))
    per_class: dict = {}
    wrong, recheck_failed, missing = [], [], 0
    rechecked = to_recheck = 0
    for a in answers:
        rec = load_record(batch_out, a["id"])
        c = per_class.setdefault(a["class"], {"instances": 0, "answer": {}, "decided": 0, "known": 0,
                                              "verdicts": {}, "wrong": 0, "seconds": []})
        c["instances"] += 1
        c["answer"][a["answer"]] = c["answer"].get(a["answer"], 0) + 1
        if rec is None:
            missing += 1
            c["verdicts"]["(not run)"] = c["verdicts"].get("(not run)", 0) + 1
            continue
        v = rec["verdict"] if rec["status"] == "ok" else rec["status"]
        c["verdicts"][v] = c["verdicts"].get(v, 0) + 1
        c["seconds"].append(rec["seconds"])
        if v in ("proved", "memorized"):
            c["decided"] += 1
            to_recheck += 1
            ok, msg = check_file(os.path.join(batch_out, rec["result"]))
            rechecked += 1
            if not ok:
                recheck_failed.append({"id": a["id"], "class": a["class"], "verdict": v, "reason": msg[:300]})
        if a["answer"] in DECIDED:
            c["known"] += 1
            if v == WRONG[a["answer"]]:
                c["wrong"] += 1
                wrong.append({"id": a["id"], "class": a["class"], "answer": a["answer"], "verdict": v})
    classes = {}
    for name, c in sorted(per_class.items()):
        secs = sorted(c.pop("seconds"))
        ran = sum(v for k, v in c["verdicts"].items() if k != "(not run)")
        classes[name] = dict(c, ran=ran, decided_share=round(c["decided"] / ran, 4) if ran else None,
                             seconds_mean=round(sum(secs) / len(secs), 4) if secs else None,
                             seconds_p90=round(secs[min(len(secs) - 1, math.ceil(0.9 * len(secs)) - 1)], 4)
                             if secs else None)
    report = {"format": CAMPAIGN_FORMAT, "instances": len(answers), "ran": len(answers) - missing,
              "wrong_verdicts": len(wrong) + len(recheck_failed), "wrong": wrong,
              "recheck": {"proved_or_memorized": to_recheck, "rechecked": rechecked, "failed": recheck_failed},
              "classes": classes}
    if cross:
        from verify.batch.smt_cross import cross_check_tree
        t0 = time.perf_counter()
        report["smt_cross_check"] = cross_check_tree(os.path.join(batch_out, "smt2"), smt_ms)
        report["smt_cross_check"]["seconds"] = round(time.perf_counter() - t0, 3)
    atomic_write_text(os.path.join(out, "campaign.json"), json.dumps(report, indent=1))
    return report


def format_report(rep: dict) -> str:
    """The campaign as a markdown table (per class) and a few lines of totals."""
    lines = ["| class | answer | ran | decided | decided share | wrong | verdicts | mean s | p90 s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, c in rep["classes"].items():
        ans = ", ".join(f"{k} {v}" for k, v in sorted(c["answer"].items()))
        verd = ", ".join(f"{k} {v}" for k, v in sorted(c["verdicts"].items()))
        share = "-" if c["decided_share"] is None else f"{100 * c['decided_share']:.1f} %"
        lines.append(f"| {name} | {ans} | {c['ran']} | {c['decided']} | {share} | {c['wrong']} | {verd} | "
                     f"{c['seconds_mean']} | {c['seconds_p90']} |")
    rc = rep["recheck"]
    lines.append("")
    lines.append(f"instances {rep['instances']}, ran {rep['ran']}, wrong verdicts {rep['wrong_verdicts']}; "
                 f"proved/memorized {rc['proved_or_memorized']}, re-checked by the trusted checker "
                 f"{rc['rechecked']}, rejected {len(rc['failed'])}")
    sc = rep.get("smt_cross_check")
    if sc:
        lines.append(f"SMT-LIB2 queries {sc['queries']} (cvc5 {sc['cvc5']}): both decided {sc['both_decided']}, "
                     f"z3 {sc['z3_answers']}, cvc5 {sc['cvc5_answers']}, disagreements {len(sc['disagreements'])}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m verify.batch.campaign", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="write instances, manifest.jsonl and answers.jsonl")
    g.add_argument("--n", type=int, default=300)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", required=True)
    g.add_argument("--max-d", type=int, default=16)
    g.add_argument("--timeout", type=float, default=20.0, help="each check's solver time limit")
    g.add_argument("--job-timeout", type=float, default=120.0)
    g.add_argument("--start", type=int, default=0, help="add instances start.. to a campaign folder")
    s = sub.add_parser("score", help="compare verdicts with the known answers; write campaign.json")
    s.add_argument("dir")
    s.add_argument("--batch-out", default=None)
    s.add_argument("--no-cross", action="store_true", help="skip Z3 against cvc5")
    a = sub.add_parser("all", help="generate, run the batch and score")
    for p in (a,):
        p.add_argument("--n", type=int, default=300)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--out", required=True)
        p.add_argument("--max-d", type=int, default=16)
        p.add_argument("--timeout", type=float, default=20.0)
        p.add_argument("--job-timeout", type=float, default=120.0)
        p.add_argument("--workers", type=int, default=2)
    ns = ap.parse_args(argv)
    if ns.cmd in ("generate", "all"):
        if ns.n < 1 or ns.max_d < 1:
            ap.error("--n and --max-d must be positive")
        generate_campaign(ns.out, ns.n, ns.seed, ns.max_d, ns.timeout, ns.job_timeout,
                          progress=lambda m: print(m, file=sys.stderr), start=getattr(ns, "start", 0))
        print(f"wrote {ns.n} instances to {ns.out}/manifest.jsonl")
    if ns.cmd == "all":
        from verify.batch.jobs import read_manifest
        from verify.batch.runner import run_batch
        summ = run_batch(read_manifest(os.path.join(ns.out, "manifest.jsonl")), os.path.join(ns.out, "batch"),
                         workers=ns.workers, job_timeout=ns.job_timeout)
        print(json.dumps({k: summ[k] for k in ("jobs", "statuses", "verdicts", "seconds", "wall_seconds")}))
    if ns.cmd in ("score", "all"):
        d = ns.dir if ns.cmd == "score" else ns.out
        rep = score_campaign(d, getattr(ns, "batch_out", None), cross=not getattr(ns, "no_cross", False))
        print(format_report(rep))
        bad = rep["wrong_verdicts"] or (rep.get("smt_cross_check") or {}).get("disagreements")
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

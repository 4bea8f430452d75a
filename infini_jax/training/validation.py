"""Validation during training, per data source, in nats per token and in bits per byte.

Each entry of `data.source` has its own held-out slice (`data.validation_fraction` of a
prepared source's documents; all of them for a validation-only source of weight 0; a disjoint
range of the synthetic generator). Every `eval_every_steps` the same first `eval_batches`
batches of each slice are scored, and the metrics are:

  val/<name>/loss   nats per target token of that source
  val/<name>/bpb    bits per byte: the summed NLL / (ln 2 × the UTF-8 bytes its targets decode
                    to, document by document), which compares runs across tokenizers
  val/micro/...     the same over every source's tokens (bytes) pooled
  val/macro/...     the mean of the sources' figures
  val_loss          = val/micro/loss (the name earlier runs logged)

A target's NLL counts whatever the token (EOS included); its bytes are what the tokenizer
decodes it to (nothing for EOS and other special tokens).
"""

import math
from collections.abc import Callable

import jax
import numpy as np
from jax.experimental import multihost_utils

from infini_jax.errors import DataError
from infini_jax.training.step import loss_sums

LN2 = math.log(2.0)


def target_bytes(batch: dict[str, np.ndarray], decode: Callable[[list[int]], str]) -> int:
    """The UTF-8 bytes that the counted targets (mask) of a host batch `[batch, seq]` decode
    to, each document (segment id) of each row decoded on its own."""
    total = 0
    rows = zip(batch["targets"], batch["mask"], batch["segment_ids"], strict=True)
    for targets, mask, ids in rows:
        for doc in np.unique(ids[mask]):
            total += len(decode(targets[mask & (ids == doc)].tolist()).encode("utf-8"))
    return total


def bits_per_byte(nll_nats: float, n_bytes: float) -> float:
    """Summed NLL in nats over `n_bytes` bytes, in bits per byte."""
    return nll_nats / (LN2 * max(n_bytes, 1.0))


def summarize(per_source: dict[str, tuple[float, float, float]]) -> dict[str, float]:
    """Metrics from `{name: (summed NLL in nats, tokens, bytes)}` (see the module docstring)."""
    out = {}
    for name, (nll, tokens, n_bytes) in per_source.items():
        out[f"val/{name}/loss"] = nll / max(tokens, 1.0)
        out[f"val/{name}/bpb"] = bits_per_byte(nll, n_bytes)
    nll, tokens, n_bytes = (sum(v[i] for v in per_source.values()) for i in range(3))
    out["val/micro/loss"] = nll / max(tokens, 1.0)
    out["val/micro/bpb"] = bits_per_byte(nll, n_bytes)
    for unit in ("loss", "bpb"):
        out[f"val/macro/{unit}"] = float(np.mean([out[f"val/{n}/{unit}"] for n in per_source]))
    out["val_loss"] = out["val/micro/loss"]
    return out


class Validation:
    """`params → metrics` over each source's held-out batches (the same ones every time).

    Args:
      names: the sources' names (`DataConfig.names`).
      batches: `k → this process's host batches of source k` (an iterable).
      eval_batches: batches scored per source.
      data_batch: this process's rows per batch (a final partial batch is not scored).
      decode: the tokenizer's `decode`.
      to_global: a host batch → the global (sharded) batch.
      sums: `(params, global batch) → (summed NLL, tokens)`, compiled.
    """

    def __init__(self, names, batches, eval_batches, data_batch, decode, to_global, sums):
        self.names, self.batches_of, self.eval_batches = names, batches, eval_batches
        self.data_batch, self.decode = data_batch, decode
        self.to_global, self.sums = to_global, sums
        self.held: list[tuple[list[dict], int]] | None = None  # per source: batches, bytes

    def _load(self) -> list[tuple[list[dict], int]]:
        """Reads each source's batches once, with the bytes their targets decode to (summed
        over processes)."""
        held = []
        for k, name in enumerate(self.names):
            batches = []
            for batch in self.batches_of(k):
                if len(batches) == self.eval_batches or len(batch["tokens"]) != self.data_batch:
                    break
                batches.append(batch)
            if not batches:
                raise DataError(
                    f"data source {name!r} has no full validation batch of {self.data_batch} "
                    "rows per process; add documents, raise data.validation_fraction, or "
                    "lower data.batch_size"
                )
            n_bytes = sum(target_bytes(b, self.decode) for b in batches)
            n_bytes = int(np.sum(multihost_utils.process_allgather(np.int64(n_bytes))))
            held.append((batches, n_bytes))
        return held

    def __call__(self, params) -> dict[str, float]:
        if self.held is None:
            self.held = self._load()
        per_source = {}
        for name, (batches, n_bytes) in zip(self.names, self.held, strict=True):
            nll = tokens = 0.0
            for batch in batches:
                s, n = self.sums(params, self.to_global(batch))
                nll, tokens = nll + float(s), tokens + float(n)
            per_source[name] = (nll, tokens, float(n_bytes))
        return summarize(per_source)


def make(run, training, to_global, dataset) -> Validation | None:
    """The run's validation (None when `eval_every_steps` is 0). `dataset(run, split,
    batch_size, source=k)` gives this process's batches."""
    cfg = run.config
    if not cfg.eval_every_steps:
        return None
    sums = jax.jit(
        lambda params, batch: loss_sums(run.model_cfg, params, batch)[:2],
        in_shardings=(training.state_sh.params, training.batch_sh),
    )
    data_batch = run.data_cfg.batch_size // run.n_proc
    return Validation(
        run.data_cfg.names,
        lambda k: dataset(run, "validation", data_batch, source=k),
        cfg.eval_batches,
        data_batch,
        run.tok.decode,
        lambda batch: to_global(batch, training.batch_sh),
        sums,
    )

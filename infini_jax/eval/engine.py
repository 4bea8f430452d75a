"""The streaming evaluation engine: contexts of any length through the per-segment model step.

A batch of samples `[batch, length]` (host NumPy) is fed chunk by chunk — `chunk_segments`
windows at a time — to one jitted function that scans `model.segment_step` over the chunk's
segments with the memory carried and donated. The device only ever holds the memory, one chunk
of tokens and one segment's logits, so device memory does not grow with the context length;
the function is compiled once per batch shape, whatever the length.

From every position the device returns only small per-token figures: the log-probability of the
next token and the argmax. The host keeps them where a task scores (`scored`), plus per-segment
negative log-likelihood sums and, on request, per-segment memory statistics.

Attention kinds:
- "infini": memory carried across segments; `reset_memory=True` hands every segment an empty
  memory (the memory-read ablation: exactly what the model computes before its first segment).
- "local": independent segments.
- "full": `full_context=0` attends over the whole sample (one window, O(length²)); `C > 0`
  evaluates windows of C tokens (positions restarting, no memory), aligned so that the sample's
  last token ends a window: the question at the end sees exactly its last C tokens.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from infini_jax import model, ops
from infini_jax.model.config import ModelConfig
from infini_jax.parallel import sharding
from infini_jax.parallel.sharding import BATCH


@dataclasses.dataclass
class Streamed:
    """What one pass over a batch returns (all host NumPy).

    Attributes:
      logprob, argmax: per sample, 1-D arrays over that sample's scored positions in order:
        log p(next token) and the model's argmax there.
      segment_nll, segment_count: `[batch, windows]` summed next-token NLL and the number of
        positions counted in each window (padding and the last token excluded).
      memory_norm, memory_z: `[batch, windows, layers]` after each window: ‖M‖_F (mean over kv
        heads) and Σz (mean over kv heads); None unless asked for (infini only).
      window: tokens per window; offset: left padding added before the sample.
    """

    logprob: list[np.ndarray]
    argmax: list[np.ndarray]
    segment_nll: np.ndarray
    segment_count: np.ndarray
    memory_norm: np.ndarray | None
    memory_z: np.ndarray | None
    window: int
    offset: np.ndarray


def eval_config(model_cfg: ModelConfig, full_context: int) -> ModelConfig:
    """The config the engine runs: a "full" model with a context limit becomes windows of it."""
    if model_cfg.attention == "full" and full_context > 0:
        return dataclasses.replace(model_cfg, attention="local", segment_len=full_context)
    return model_cfg


@functools.lru_cache(maxsize=16)
def _compiled_chunk(model_cfg, reset_memory: bool, memory_stats: bool, mesh: Mesh | None):
    """The jitted chunk step of one engine configuration, shared by every `Engine` built with
    it (the parameters are an argument): evaluations repeated during training, or an ablated
    engine beside the plain one, compile once."""
    step = jax.jit(
        functools.partial(_chunk_fn, model_cfg, reset_memory, memory_stats), donate_argnums=1
    )
    if mesh is not None:  # a fused kernel follows the mesh's platform, in shard_map
        step = sharding.InMesh(step, mesh)
    return step


def _chunk_fn(model_cfg, reset_memory, memory_stats, params, memory, tokens, targets, valid):
    """One chunk `[batch, chunk]` → (memory, per-token and per-window figures)."""

    def per_segment(logits, ex, mem):
        logp = model.token_logprob(logits, ex["targets"])
        w = ex["valid"].astype(jnp.float32)
        out = {
            "logprob": logp,
            "argmax": jnp.argmax(logits, -1).astype(jnp.int32),
            "nll": -jnp.sum(logp * w, axis=-1),
            "count": jnp.sum(w, axis=-1),
        }
        if memory_stats:
            out["memory_norm"], out["memory_z"] = (x.T for x in ops.memory_stats(mem))
        return out

    extras = {"targets": targets, "valid": valid, "mask": tokens >= 0}
    outs, memory = model.scan_segments(
        model_cfg,
        params,
        per_segment,
        jnp.maximum(tokens, 0),
        extras,
        memory,
        reset_memory=reset_memory,
    )
    per_token = {k: ops.merge_segments(outs.pop(k)) for k in ("logprob", "argmax")}
    per_window = {k: jnp.swapaxes(v, 0, 1) for k, v in outs.items()}
    return memory, {**per_token, **per_window}


class Engine:
    """Streams batches of long samples through one model.

    Args:
      model_cfg: the model. params: its parameters (placed on `mesh` if given).
      mesh: samples are split over its `data` × `fsdp` axes (the batch must divide); None = the
        default device.
      chunk_segments: windows per jitted call (more = fewer dispatches, more device memory).
      reset_memory: the memory-read ablation (infini only).
      full_context: for "full" models, 0 = the whole sample, C > 0 = windows of C tokens.
      memory_stats: also return per-window memory statistics.
    """

    def __init__(
        self,
        model_cfg: ModelConfig,
        params,
        *,
        mesh: Mesh | None = None,
        chunk_segments: int = 16,
        reset_memory: bool = False,
        full_context: int = 0,
        memory_stats: bool = False,
    ):
        self.model_cfg = eval_config(model_cfg, full_context)  # the config the loop runs
        self.params = params
        self.mesh = mesh
        self.chunk_segments = chunk_segments
        self.reset_memory = reset_memory and self.model_cfg.attention == "infini"
        self.memory_stats = memory_stats and self.model_cfg.attention == "infini"
        self.align_end = model_cfg.attention == "full" and full_context > 0
        self._chunk = _compiled_chunk(self.model_cfg, self.reset_memory, self.memory_stats, mesh)

    def window(self, length: int) -> int:
        return length if self.model_cfg.attention == "full" else self.model_cfg.segment_len

    def _put(self, x: np.ndarray, spec=BATCH) -> jax.Array:
        if self.mesh is None:
            return jnp.asarray(x)
        sharding = NamedSharding(self.mesh, spec)
        n_proc, proc = jax.process_count(), jax.process_index()
        rows = x.shape[0] // n_proc
        return jax.make_array_from_process_local_data(sharding, x[proc * rows : (proc + 1) * rows])

    def _fetch(self, tree):
        if self.mesh is not None and jax.process_count() > 1:
            tree = multihost_utils.process_allgather(tree, tiled=True)
        return jax.tree.map(np.asarray, tree)

    def _init_memory(self, batch: int):
        mem = model.init_memory(self.model_cfg, batch)
        if mem is None or self.mesh is None:
            return mem
        spec = PartitionSpec(None, BATCH[0])
        return jax.jit(
            lambda: model.init_memory(self.model_cfg, batch),
            out_shardings=jax.tree.map(lambda _: NamedSharding(self.mesh, spec), mem),
        )()

    def run(self, samples: list[np.ndarray], scored: list[np.ndarray]) -> Streamed:
        """Streams a batch.

        Args:
          samples: per sample, int token ids `[length_i]` (any lengths).
          scored: per sample, int positions t whose prediction of token t + 1 is kept.

        Returns:
          A `Streamed`.
        """
        b = len(samples)
        length = max(len(x) for x in samples)
        n = self.window(length)
        padded = -(-length // n) * n
        offsets = np.asarray([padded - len(x) if self.align_end else 0 for x in samples])
        chunk = n * (self.chunk_segments if self.model_cfg.attention != "full" else 1)
        total = -(-padded // chunk) * chunk
        tokens = np.full((b, total + 1), -1, np.int32)  # -1 = padding
        for r, x in enumerate(samples):
            tokens[r, offsets[r] : offsets[r] + len(x)] = x
        targets = np.maximum(tokens[:, 1:], 0)
        valid = (tokens[:, :-1] >= 0) & (tokens[:, 1:] >= 0)
        tokens = tokens[:, :-1]
        keep = np.zeros((b, total), bool)
        for r, pos in enumerate(scored):
            keep[r, offsets[r] + np.asarray(pos, int)] = True

        memory = self._init_memory(b)
        pieces: list[dict] = []
        pending = None
        for start in range(0, padded, chunk):
            sl = slice(start, start + chunk)
            memory, out = self._chunk(
                self.params,
                memory,
                self._put(tokens[:, sl]),
                self._put(targets[:, sl]),
                self._put(valid[:, sl]),
            )
            if pending is not None:  # fetch the previous chunk while this one runs
                pieces.append(self._reduce(self._fetch(pending[1]), keep[:, pending[0]]))
            pending = (sl, out)
        pieces.append(self._reduce(self._fetch(pending[1]), keep[:, pending[0]]))

        windows = padded // n

        def cat(key):
            return np.concatenate([p[key] for p in pieces], axis=1)[:, :windows]

        return Streamed(
            logprob=[np.concatenate([p["logprob"][r] for p in pieces]) for r in range(b)],
            argmax=[np.concatenate([p["argmax"][r] for p in pieces]) for r in range(b)],
            segment_nll=cat("nll"),
            segment_count=cat("count"),
            memory_norm=cat("memory_norm") if self.memory_stats else None,
            memory_z=cat("memory_z") if self.memory_stats else None,
            window=n,
            offset=offsets,
        )

    def memory_after(self, tokens: np.ndarray):
        """The memory after streaming `tokens` `[batch, n]` (no padding), for generation."""
        b, n = tokens.shape
        chunk = self.model_cfg.segment_len * self.chunk_segments
        padded = np.full((b, -(-n // chunk) * chunk), -1, np.int32)
        padded[:, :n] = tokens
        zeros = np.zeros((b, chunk), np.int32)
        memory = self._init_memory(b)
        for start in range(0, n, chunk):
            part = self._put(padded[:, start : start + chunk])
            memory, _ = self._chunk(
                self.params, memory, part, self._put(zeros), self._put(zeros.astype(bool))
            )
        return memory

    @staticmethod
    def _reduce(out: dict, keep: np.ndarray) -> dict:
        """Drops unscored per-token figures on the host right away."""
        reduced = {k: v for k, v in out.items() if k not in ("logprob", "argmax")}
        for k in ("logprob", "argmax"):
            reduced[k] = [out[k][r][keep[r]] for r in range(keep.shape[0])]
        return reduced

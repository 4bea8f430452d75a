"""The grain input pipeline: documents → (per process) shuffled, repeated, packed batches.

read → (per-process shard) → seeded shuffle → repeat → pack into `seq_len` (document ids in
`segment_ids`, so the model resets memory at document boundaries) or pad one document per
sequence → batch → (this process's rows) → optional multiprocess prefetch. Each batch is a dict
of numpy arrays, all `[batch, seq_len]`: `tokens` int32, `targets` int32 (next token, never
across documents), `segment_ids` int32 (0 = padding) and `mask` bool (False = padding; also the
loss weight).

Several processes (`data.host_sharding`):
- "replicated": every process runs the same global stream and keeps its rows of each global
  batch. The global batches, and the iterator state, do not depend on the number of processes:
  the same run on 1 or 32 hosts sees the same data, and a checkpoint resumes on any count.
- "sharded": each process reads only its documents (`process_index::process_count`), so input
  work per host falls with the number of hosts; the batches depend on the process count, and a
  checkpoint resumes only with the same count.
"""

import glob
import json
import os
import sys
from typing import Any

import grain
import jax
import numpy as np
from absl import flags
from jax.experimental import multihost_utils

from infini_jax.data import synthetic, tokenizer
from infini_jax.data.config import DataConfig, SyntheticConfig
from infini_jax.data.prepare import decode_record
from infini_jax.errors import ConfigError, DataError, TokenizerError

SPLITS = ("train", "validation")
SYNTHETIC_DOCS = 1 << 31  # the synthetic corpus is indexed, effectively endless


class SyntheticSource:
    """Random-access synthetic documents: document i depends only on (seed, i); picklable
    (the tokenizer is loaded lazily in each worker process)."""

    def __init__(self, tokenizer_path: str, seed: int, syn: SyntheticConfig):
        self.tokenizer_path, self.seed, self.syn = tokenizer_path, seed, syn
        self._tasks, self._eos = None, None

    def __len__(self) -> int:
        return SYNTHETIC_DOCS

    def __getitem__(self, i: int) -> np.ndarray:
        if self._tasks is None:
            tok = tokenizer.load(self.tokenizer_path)
            self._tasks = synthetic.SyntheticTasks(tok.encode, self.syn.key_digits)
            self._eos = tok.eos_id
        syn = self.syn
        rng = np.random.default_rng([self.seed, int(i)])
        weights = np.asarray([syn.passkey_weight, syn.kv_recall_weight], np.float64)
        task = synthetic.TASKS[rng.choice(2, p=weights / weights.sum())]
        length = int(rng.integers(syn.min_length, syn.max_length + 1)) - 1  # room for EOS
        doc = self._tasks.sample(rng, task, length)
        return np.append(doc.tokens, np.int32(self._eos)).astype(np.int32)


def check_synthetic_lengths(syn: SyntheticConfig, tokenizer_path: str) -> None:
    """Start-up check: the shortest configured document must fit the fixed parts of every task
    the mixture draws (a task of weight 0 is never generated, so never checked)."""
    tasks = synthetic.SyntheticTasks(tokenizer.load(tokenizer_path).encode, syn.key_digits)
    weights = dict(zip(synthetic.TASKS, (syn.passkey_weight, syn.kv_recall_weight), strict=True))
    for task in synthetic.TASKS:
        if weights[task] <= 0:
            continue
        try:
            tasks.sample(np.random.default_rng(0), task, syn.min_length - 1)  # - 1: the EOS
        except ValueError as e:
            raise DataError(
                f"config.data.synthetic.min_length={syn.min_length} is too short: {e}; raise it"
            ) from None


def array_record_source(pattern: str) -> grain.sources.ArrayRecordDataSource:
    """Prepared shards matching `pattern`; a missing, truncated or corrupt shard is one error."""
    paths = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
    paths = [p for p in paths if not p.endswith(".tmp")]
    if not paths:
        raise DataError(
            f"data.source pattern {pattern} matches no ArrayRecord shard; "
            "run python -m infini_jax.data.prepare first"
        )
    for path in paths:
        if not os.path.isfile(path):
            raise DataError(f"ArrayRecord shard {path} does not exist")
        try:
            grain.sources.ArrayRecordDataSource([path])
        except RuntimeError as e:
            raise DataError(
                f"ArrayRecord shard {path} is truncated or corrupt "
                f"({(str(e).strip() or type(e).__name__)[:120]!r}); re-run prepare for it"
            ) from None
    return grain.sources.ArrayRecordDataSource(paths)


class _Split:
    """Every `period`-th document (from 0) is validation; the others are train."""

    def __init__(self, n: int, period: int, split: str):
        self.n, self.period, self.split = n, period, split

    def __len__(self) -> int:
        n_val = -(-self.n // self.period)
        return n_val if self.split == "validation" else self.n - n_val

    def index(self, j: int) -> int:
        p = self.period
        return j * p if self.split == "validation" else j + j // (p - 1) + 1


def _documents(
    spec: str, data: DataConfig, tokenizer_path: str, seed: int, split: str, held_out: bool
) -> grain.MapDataset:
    """One source of int32 token arrays (EOS-terminated documents) for one split; a
    `held_out` (validation-only) prepared source is validation as a whole."""
    if spec == "synthetic":
        check_synthetic_lengths(data.synthetic, tokenizer_path)
        # Validation draws from a disjoint index range of the same generator.
        offset = 0 if split == "train" else SYNTHETIC_DOCS // 2
        source = SyntheticSource(tokenizer_path, seed, data.synthetic)
        return grain.MapDataset.range(SYNTHETIC_DOCS // 2).map(lambda i: source[i + offset])
    source = array_record_source(spec)
    period = 1 if held_out else max(2, round(1.0 / data.validation_fraction))
    chosen = _Split(len(source), period, split)
    if len(chosen) == 0:
        raise DataError(f"data.source {spec} has too few documents for a {split} split")
    return grain.MapDataset.range(len(chosen)).map(lambda j: decode_record(source[chosen.index(j)]))


def _window(doc: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random window of `length` tokens of `doc` (all of it if shorter)."""
    if len(doc) <= length:
        return doc
    start = int(rng.integers(0, len(doc) - length + 1))
    return doc[start : start + length]


def _to_example(
    doc: np.ndarray, seq_len: int, packing: str, source: int | None = None
) -> dict[str, np.ndarray]:
    """A document as inputs and targets; with `source`, each token also tagged with it."""
    doc = doc.astype(np.int32)
    inputs, targets = doc[:-1], doc[1:]
    if packing == "padding":
        inputs, targets = inputs[:seq_len], targets[:seq_len]  # documented: truncates
    ex = {"inputs": inputs, "targets": targets}
    if source is not None:
        ex["sources"] = np.full(len(inputs), source, np.int32)
    return ex


def _pad_one(ex: dict[str, np.ndarray], seq_len: int) -> dict[str, np.ndarray]:
    n = len(ex["inputs"])
    out = {k: np.zeros(seq_len, np.int32) for k in ("inputs", "targets", "inputs_segment_ids")}
    out["inputs"][:n], out["targets"][:n], out["inputs_segment_ids"][:n] = (
        ex["inputs"],
        ex["targets"],
        1,
    )
    if "sources" in ex:  # padding is tagged -1
        out["sources"] = np.full(seq_len, -1, np.int32)
        out["sources"][:n] = ex["sources"]
    return out


def _final(ex: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    ids = ex["inputs_segment_ids"].astype(np.int32)
    out = {
        "tokens": ex["inputs"].astype(np.int32),
        "targets": ex["targets"].astype(np.int32),
        "segment_ids": ids,
        "mask": ids > 0,
    }
    if "sources" in ex:  # inspection: each token's source, and its position in its document
        out["sources"] = np.where(ids > 0, ex["sources"], -1).astype(np.int32)
        positions = ex.get("inputs_positions", np.arange(len(ids)))
        out["positions"] = np.where(ids > 0, positions, -1).astype(np.int32)
    return out


def make_dataset(
    data: DataConfig,
    *,
    tokenizer_path: str,
    seed: int,
    batch_size: int,
    split: str = "train",
    process_index: int = 0,
    process_count: int = 1,
    epochs: int | None = None,
    source: int | None = None,
    tag_sources: bool = False,
) -> grain.IterDataset:
    """The batches of this process: `batch_size` is the per-process batch (global batch /
    `process_count`), its rows chosen by `data.host_sharding` (see the module docstring).

    Train repeats `epochs` times (None = forever), reshuffling every epoch, and mixes the
    sources of weight > 0; validation is one ordered pass, of the `source`-th source only
    when given (else of the mixture). A final partial batch is dropped only when repeating
    forever. `tag_sources` adds "sources" and "positions" `[batch, seq]`: each token's source
    index and position in its document, -1 on padding (what `python -m infini_jax.show batch`
    counts; training does not ask for them).
    """
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not one of {SPLITS}")
    trained = data.trained
    chosen = [source] if source is not None else range(len(data.sources))
    if split == "train":
        chosen = [k for k in chosen if trained[k]]
    weights = data.mixture_weights
    weights = [weights[k] for k in chosen] if weights and len(chosen) > 1 else None
    sharded = data.host_sharding == "sharded"
    parts = []
    for k in chosen:
        spec = data.sources[k]
        ds = _documents(spec, data, tokenizer_path, seed, split, held_out=not trained[k])
        if sharded:
            ds = ds[process_index::process_count]
        if split == "train":
            ds = ds.shuffle(seed + 7919 * k).repeat(epochs)
        windows = data.packing == "padding" and data.long_documents == "random_window"
        if windows and spec != "synthetic":
            ds = ds.random_map(lambda doc, rng: _window(doc, data.seq_len + 1, rng), seed=seed + k)
        tag = k if tag_sources else None
        ds = ds.map(lambda doc, tag=tag: _to_example(doc, data.seq_len, data.packing, tag))
        parts.append(ds.to_iter_dataset())
    ds = parts[0] if len(parts) == 1 else grain.IterDataset.mix(parts, weights)
    if data.packing == "concat":
        names = ("inputs", "targets", "sources") if tag_sources else ("inputs", "targets")
        ds = grain.experimental.ConcatThenSplitIterDataset(
            ds, length_struct=dict.fromkeys(names, data.seq_len)
        )
    else:
        ds = ds.map(lambda ex: _pad_one(ex, data.seq_len))
    endless = split == "train" and epochs is None
    if sharded or process_count == 1:
        ds = ds.map(_final).batch(batch_size, drop_remainder=endless)
    else:  # the global batch, then this process's rows of it
        lo, hi = process_index * batch_size, (process_index + 1) * batch_size
        ds = ds.map(_final).batch(batch_size * process_count, drop_remainder=endless)
        ds = ds.map(lambda b: {k: v[lo:hi] for k, v in b.items()})
    if data.worker_count > 0:
        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags (library use)
            flags.FLAGS.mark_as_parsed()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=data.worker_count))
    return ds


def iterator_state(
    iterator: Any, process_index: int, process_count: int, host_sharding: str = "replicated"
) -> dict:
    """The iterator's position, JSON-serialisable, to save with process 0's checkpoint.

    "replicated": every process holds the same state; it is saved once. "sharded": the states
    of all processes are gathered (a collective: every process must call this together).
    """
    state = iterator.get_state()
    if host_sharding == "replicated" or process_count == 1:
        return {"grain": state, "host_sharding": host_sharding, "process_count": process_count}
    return {
        "processes": _allgather_json(state),
        "host_sharding": host_sharding,
        "process_count": process_count,
    }


def restore_iterator(
    iterator: Any,
    state: dict,
    process_index: int,
    process_count: int,
    host_sharding: str = "replicated",
):
    """Puts `iterator` where `state` left it; a layout it cannot continue is one clear error."""
    saved_count = state.get("process_count", 1)
    if "processes" in state:  # "sharded" over several processes: one state per process
        if host_sharding != "sharded" or saved_count != process_count:
            raise DataError(
                f"data iterator state was saved by {saved_count} processes with "
                f"data.host_sharding='sharded'; resume with {saved_count} processes and "
                f"host_sharding='sharded' (this run: {process_count}, {host_sharding!r})"
            )
        iterator.set_state(state["processes"][process_index])
        return iterator
    # One global stream: written by one process, or by "replicated" processes. Sharded
    # processes of a later run would each read a different stream, so only one can continue it.
    if host_sharding == "sharded" and process_count > 1:
        raise DataError(
            f"data iterator state is one global stream but this run has {process_count} "
            "processes with data.host_sharding='sharded'; use 'replicated' to resume it"
        )
    iterator.set_state(state["grain"])
    return iterator


def _allgather_json(obj) -> list:
    """Every process's `obj` (JSON-serialisable), in process order."""
    data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
    sizes = multihost_utils.process_allgather(np.asarray([len(data)], np.int64))
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: len(data)] = data
    gathered = np.asarray(multihost_utils.process_allgather(padded))
    return [
        json.loads(bytes(row[:n]).decode()) for row, n in zip(gathered, sizes.ravel(), strict=True)
    ]


def resolve_tokenizer(
    data: DataConfig, workdir: str, vocab_size: int, seed: int, model_cfg=None
) -> tokenizer.Tokenizer:
    """The configured tokenizer (or the built-in one), checked against the model's vocab; with
    `model_cfg`, process 0 prints one warning line if the model's vocabulary is larger."""
    if data.tokenizer:
        tok = tokenizer.load(data.tokenizer)
    else:
        size = min(vocab_size, data.synthetic.tokenizer_vocab_size)
        try:
            tok = tokenizer.default_tokenizer(workdir, size, seed)
        except TokenizerError as e:
            field = (
                f"config.model.vocab_size={vocab_size}"
                if vocab_size <= data.synthetic.tokenizer_vocab_size
                else f"config.data.synthetic.tokenizer_vocab_size={size}"
            )
            raise ConfigError(
                f"{field} is too small for the built-in tokenizer ({e}); raise it, or pass "
                "your own --config.data.tokenizer"
            ) from None
    tok.check_fits(vocab_size)
    if model_cfg is not None and jax.process_index() == 0:
        warning = tok.unused_rows(vocab_size, model_cfg.d_model, model_cfg.tie_embeddings)
        if warning:
            print(warning, file=sys.stderr)
    return tok

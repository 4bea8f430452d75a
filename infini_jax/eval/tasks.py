"""Evaluation tasks: sample builders and scoring, all through `engine.Engine`.

- passkey: the Landmark template (`infini_jax.data.synthetic`), a key of `key_digits` digits.
- niah: a needle ("The special magic number is K.") in a haystack of corpus text (or the
  built-in filler), the same question-at-the-end format.
- ppl_by_position: next-token NLL per segment index, with the memory and with its reads ablated.
- memory_stats: the balance factors g(b), the memory's growth segment by segment, and its
  write gates (mean write strength β and decay α per layer and kv head) where it has them.

Retrieval scoring is teacher-forced: the answer is correct when the argmax at every answer
position equals the answer token. Since every earlier answer token is then right, this equals
greedy decoding of the answer's tokens (tested).
"""

import dataclasses
import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from infini_jax import model
from infini_jax.data import synthetic
from infini_jax.eval.engine import Engine

NIAH_NEEDLE = " The special magic number is {key}."
NIAH_QUESTION = " What is the special magic number? The special magic number is"


@dataclasses.dataclass(frozen=True)
class Sample:
    """One retrieval sample: `tokens` `[n]`; the answer is `tokens[answer_start:]`."""

    task: str
    length: int
    depth: int  # percent: 0 = furthest from the question
    seed: int
    tokens: np.ndarray
    answer: str
    answer_start: int
    needle_start: int


def sample_seed(seed: int, task: str, length: int, depth: int, index: int) -> int:
    """The seed of one cell sample: a pure function of its coordinates."""
    entropy = [seed, sum(map(ord, task)), length, depth, index]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


@dataclasses.dataclass(frozen=True)
class Grid:
    """The cells of a retrieval task: `samples_per_cell` samples per (length, depth) pair."""

    lengths: Sequence[int]  # tokens per sample
    depths: Sequence[int]  # percent of the way from the start: 0 = furthest from the question
    samples_per_cell: int
    seed: int

    def cells(self, task: str):
        """Every (length, depth, sample seed) of `task`, in order."""
        for length in self.lengths:
            for depth in self.depths:
                for i in range(self.samples_per_cell):
                    yield length, depth, sample_seed(self.seed, task, length, depth, i)


def passkey_samples(
    encode: Callable[[str], list[int]], grid: Grid, key_digits: int
) -> list[Sample]:
    """`grid.samples_per_cell` passkey documents of at most `length` tokens per cell."""
    tasks = synthetic.SyntheticTasks(encode, key_digits)
    out = []
    for length, depth, s in grid.cells("passkey"):
        doc = tasks.sample(np.random.default_rng(s), "passkey", length, depth / 100)
        answer = (doc.tokens, doc.answer, doc.answer_start, doc.needle_start)
        out.append(Sample("passkey", length, depth, s, *answer))
    return out


def niah_samples(
    encode: Callable[[str], list[int]], grid: Grid, key_digits: int, haystack: np.ndarray | None
) -> list[Sample]:
    """Needle-in-a-haystack samples of exactly `length` tokens.

    `haystack`: the corpus as one int token stream; each sample starts at a seeded offset and
    wraps around. None = the built-in filler sentence repeated. The needle goes in at the token
    index `depth`% of the way through the haystack part.
    """
    if haystack is None:
        haystack = np.asarray(encode(synthetic.FILLER) * 64, np.int32)
    question = np.asarray(encode(NIAH_QUESTION), np.int32)
    out = []
    for length, depth, s in grid.cells("niah"):
        rng = np.random.default_rng(s)
        key = synthetic.random_digits(rng, key_digits)
        needle = np.asarray(encode(NIAH_NEEDLE.format(key=key)), np.int32)
        answer = np.asarray(encode(" " + key), np.int32)
        n_hay = length - len(needle) - len(question) - len(answer)
        if n_hay < 0:
            raise ValueError(f"niah length {length} is shorter than needle + question")
        start = int(rng.integers(len(haystack)))
        hay = np.take(haystack, np.arange(start, start + n_hay), mode="wrap")
        at = int(round(depth / 100 * n_hay))
        tokens = np.concatenate([hay[:at], needle, hay[at:], question, answer])
        out.append(Sample("niah", length, depth, s, tokens, key, len(tokens) - len(answer), at))
    return out


def _batches(items: list, batch_size: int):
    for i in range(0, len(items), batch_size):
        yield items[i : i + batch_size]


def _pad_batch(items: list, shards: int, filler) -> list:
    return items + [filler] * (-len(items) % shards)


def score_retrieval(
    engine: Engine,
    samples: list[Sample],
    decode: Callable[[list[int]], str],
    *,
    batch_size: int,
    shards: int = 1,
    progress: Callable[[int], None] | None = None,
) -> list[dict]:
    """One record per sample (see docs/evaluation.md for the fields)."""
    records = []
    digit_tokens = {}
    for group in _batches(samples, batch_size):
        batch = _pad_batch(group, shards, group[0])
        res = engine.run(
            [s.tokens for s in batch],
            [np.arange(s.answer_start - 1, len(s.tokens) - 1) for s in batch],
        )
        for r, s in enumerate(group):
            gold = s.tokens[s.answer_start :]
            pred = res.argmax[r]
            hit = pred == gold
            is_digit = np.asarray(
                [digit_tokens.setdefault(int(t), decode([int(t)]).strip().isdigit()) for t in gold]
            )
            offset, window = res.offset[r], res.window

            def seg(pos, offset=offset, window=window):
                return int((offset + pos) // window)

            records.append(
                {
                    "task": s.task,
                    "length": s.length,
                    "depth": s.depth,
                    "seed": s.seed,
                    "needle_segment": seg(s.needle_start),
                    "segments_back": seg(s.answer_start - 1) - seg(s.needle_start),
                    "answer": s.answer,
                    "prediction": decode([int(t) for t in pred]).strip(),
                    "correct": bool(np.all(hit)),
                    "digit_accuracy": float(np.mean(hit[is_digit])) if is_digit.any() else None,
                    "answer_logprob": float(np.sum(res.logprob[r])),
                }
            )
        if progress:
            progress(len(group))
    return records


def accuracy(rows: list[dict]) -> dict:
    """Exact match, mean digit accuracy (None when no sample has digits) and count of `rows`."""
    digits = [r["digit_accuracy"] for r in rows if r["digit_accuracy"] is not None]
    return {
        "accuracy": float(np.mean([r["correct"] for r in rows])),
        "digit_accuracy": float(np.mean(digits)) if digits else None,
        "n": len(rows),
    }


def summarize_retrieval(records: list[dict]) -> dict:
    """Accuracy overall, per length, per depth, per segments back, and per (depth, length)."""
    out = {"overall": accuracy(records)}
    for key in ("length", "depth", "segments_back"):
        values = sorted({r[key] for r in records})
        out[f"by_{key}"] = {str(v): accuracy([r for r in records if r[key] == v]) for v in values}
    out["by_depth_length"] = {
        f"{d},{n}": accuracy([r for r in records if r["depth"] == d and r["length"] == n])
        for d in sorted({r["depth"] for r in records})
        for n in sorted({r["length"] for r in records})
    }
    beyond = [r for r in records if r["segments_back"] > 0]
    out["beyond_first_segment"] = accuracy(beyond) if beyond else None
    return out


def nll_by_segment(
    engine: Engine, docs: list[np.ndarray], *, batch_size: int, shards: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Summed NLL and token counts per window index over `docs`: two `[windows]` arrays."""
    nll, count = None, None
    for group in _batches(docs, batch_size):
        batch = _pad_batch(group, shards, np.zeros((1,), np.int32))
        res = engine.run(batch, [np.zeros((0,), int)] * len(batch))
        n, c = res.segment_nll[: len(group)].sum(0), res.segment_count[: len(group)].sum(0)
        if nll is None:
            nll, count = n, c
        else:
            width = max(len(nll), len(n))
            nll = np.pad(nll, (0, width - len(nll))) + np.pad(n, (0, width - len(n)))
            count = np.pad(count, (0, width - len(count))) + np.pad(c, (0, width - len(c)))
    return nll, count


def memory_growth(
    engine: Engine, docs: list[np.ndarray], *, batch_size: int, shards: int = 1
) -> dict[str, np.ndarray]:
    """Mean ‖M‖_F and Σz after each segment, `[windows, layers]`, over `docs` of equal length."""
    norms, zs = [], []
    for group in _batches(docs, batch_size):
        batch = _pad_batch(group, shards, group[0])
        res = engine.run(batch, [np.zeros((0,), int)] * len(batch))
        norms.append(res.memory_norm[: len(group)])
        zs.append(res.memory_z[: len(group)])
    return {
        "memory_norm": np.concatenate(norms).mean(0),
        "memory_z": np.concatenate(zs).mean(0),
    }


def write_gate_means(
    model_cfg, params, docs: list[np.ndarray], *, batch_size: int
) -> dict[str, np.ndarray]:
    """The memory's write gates over `docs` (equal lengths), each `[layers, kv_heads]`: "beta",
    the mean write strength over tokens; "alpha", the mean decay over segments. Empty for a
    model without them."""
    step = jax.jit(functools.partial(model.segment_gates, model_cfg))
    n = model_cfg.segment_len
    means: dict[str, list] = {}
    weights = []
    for group in _batches(docs, batch_size):
        tokens = np.stack([d[: len(d) - len(d) % n] for d in group])
        memory = model.init_memory(model_cfg, len(group))
        for lo in range(0, tokens.shape[1], n):
            memory, gates = step(params, jnp.asarray(tokens[:, lo : lo + n]), memory)
            for name, value in gates.items():  # [layers, batch, (n,) kv]: mean over the middle
                value = np.asarray(value)
                means.setdefault(name, []).append(value.mean(tuple(range(1, value.ndim - 1))))
            weights.append(len(group))
    return {name: np.average(np.stack(v), axis=0, weights=weights) for name, v in means.items()}

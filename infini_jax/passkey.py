"""A quick teacher-forced passkey check (the Landmark template) through the segment scan.

For each sample the answer counts as correct when the model's argmax at every answer position
(teacher-forced, so identical to greedy decoding of the first answer tokens) is the answer.
Only argmax ids leave the scan, never `[length, vocab]` logits. The full evaluation harness
(lengths × depths grids, plots, other tasks) builds on the same engine.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from infini_jax import model as M
from infini_jax.data.synthetic import SyntheticTasks
from infini_jax.model_config import ModelConfig


@functools.partial(jax.jit, static_argnums=0)
def _argmax_tokens(cfg: ModelConfig, params, tokens, mask):
    ids, _ = M.scan_segments(
        cfg, params, lambda lg, _: jnp.argmax(lg, -1).astype(jnp.int32), tokens, {"mask": mask}
    )
    return jnp.swapaxes(ids, 0, 1).reshape(tokens.shape)


def passkey_check(
    cfg: ModelConfig,
    params,
    encode,
    *,
    lengths,
    depths=(0.0, 0.25, 0.5, 0.75, 1.0),
    samples: int = 4,
    key_digits: int = 5,
    seed: int = 0,
) -> list[dict]:
    """One record per sample: length, depth, segments_back, correct, digit accuracy."""
    tasks = SyntheticTasks(encode, key_digits)
    window = cfg.segment_len if cfg.attention != "full" else 1
    records = []
    for length in lengths:
        padded = -(-length // window) * window
        docs = [
            tasks.sample(np.random.default_rng([seed, length, i, j]), "passkey", length, d)
            for i, d in enumerate(depths)
            for j in range(samples)
        ]
        tokens = np.zeros((len(docs), padded), np.int32)
        mask = np.zeros((len(docs), padded), bool)
        for r, doc in enumerate(docs):
            tokens[r, : len(doc.tokens)] = doc.tokens
            mask[r, : len(doc.tokens)] = True
        preds = np.asarray(_argmax_tokens(cfg, params, jnp.asarray(tokens), jnp.asarray(mask)))
        for r, doc in enumerate(docs):
            a = doc.answer_start
            answer = doc.tokens[a:]
            got = preds[r, a - 1 : a - 1 + len(answer)]
            seg = cfg.segment_len if cfg.attention != "full" else padded
            records.append(
                {
                    "length": length,
                    "depth": doc.depth,
                    "correct": bool(np.all(got == answer)),
                    "digit_accuracy": float(np.mean(got == answer)),
                    "segments_back": a // seg - doc.needle_start // seg,
                }
            )
    return records


def summarize(records: list[dict]) -> dict:
    """Accuracy overall, by length, and by segments back (0 = needle in the question's segment)."""

    def acc(rs):
        return {"accuracy": float(np.mean([r["correct"] for r in rs])), "n": len(rs)}

    out = {"overall": acc(records), "by_length": {}, "by_segments_back": {}}
    for key, field in (("by_length", "length"), ("by_segments_back", "segments_back")):
        for value in sorted({r[field] for r in records}):
            out[key][str(value)] = acc([r for r in records if r[field] == value])
    beyond = [r for r in records if r["segments_back"] > 0]
    out["beyond_first_segment"] = acc(beyond) if beyond else None
    return out

"""One evaluation task on given parameters: the corpus, the samples, the streaming engine
(`python -m infini_jax.evaluate` on a checkpoint, and the evaluations during training).
"""

import sys

import ml_collections
import numpy as np

from infini_jax.data import sources, synthetic
from infini_jax.errors import ConfigError, DataError
from infini_jax.eval import report, tasks
from infini_jax.eval.engine import Engine


def read_corpus(config: ml_collections.ConfigDict, encode) -> list[np.ndarray]:
    """The corpus documents as token arrays, up to `corpus_max_tokens` in all."""
    docs, total = [], 0
    for path in sources.expand(config.corpus):
        for text in sources.read_documents(path, text_field=config.text_field):
            docs.append(np.asarray(encode(text), np.int32))
            total += len(docs[-1])
            if total >= config.corpus_max_tokens:
                return docs
    return docs


def _long_documents(config, encode, length: int) -> list[np.ndarray]:
    """`samples_per_cell` documents of `length` tokens for ppl / memory statistics."""
    if config.corpus:
        docs = [d[:length] for d in read_corpus(config, encode) if len(d) >= length]
        if not docs:
            raise DataError(
                f"config.corpus={config.corpus!r} has no document of at least {length} tokens; "
                "use longer documents or shorter --config.lengths"
            )
        return docs[: config.samples_per_cell]
    maker = synthetic.SyntheticTasks(encode, config.key_digits)
    out = []
    for i in range(config.samples_per_cell):
        s = tasks.sample_seed(config.seed, "long_document", length, 0, i)
        doc = maker.sample(np.random.default_rng(s), synthetic.TASKS[i % 2], length)
        out.append(doc.tokens)
    return out


def check_batch(config: ml_collections.ConfigDict, mesh) -> None:
    """The eval batch must split over the mesh's data axes."""
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if config.batch_size % shards:
        raise ConfigError(
            f"config.batch_size={config.batch_size} is not divisible by data×fsdp={shards}"
        )


def check_model(config: ml_collections.ConfigDict, model_cfg) -> None:
    if config.task == "memory_stats" and model_cfg.attention != "infini":
        raise ConfigError(
            f"memory_stats needs an infini checkpoint; this one is {model_cfg.attention}"
        )


def run_task(
    config: ml_collections.ConfigDict, model_cfg, params, tok, mesh, progress: bool = False
) -> tuple[list[dict], dict]:
    """The eval `config`'s task on `params` (placed on `mesh`) with the streaming engine:
    `(records, summary)`, written nowhere. `evaluate` runs it on a checkpoint; training runs it
    on the live parameters (`config.evals`). Every process calls it (SPMD)."""
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    engine_kw = dict(
        mesh=mesh, chunk_segments=config.chunk_segments, full_context=config.full_context
    )
    engine = Engine(model_cfg, params, reset_memory=config.ablate_memory, **engine_kw)
    if config.task in ("passkey", "niah"):
        grid = tasks.Grid(config.lengths, config.depths, config.samples_per_cell, config.seed)
        try:
            if config.task == "passkey":
                samples = tasks.passkey_samples(tok.encode, grid, config.key_digits)
            else:
                hay = np.concatenate(read_corpus(config, tok.encode)) if config.corpus else None
                samples = tasks.niah_samples(tok.encode, grid, config.key_digits, hay)
        except ValueError as e:
            raise ConfigError(f"config.lengths: {e}") from None
        done = [0]

        def show(n):
            done[0] += n
            if progress:
                print(f"\r{config.task}: {done[0]}/{len(samples)} samples", end="", file=sys.stderr)

        records = tasks.score_retrieval(
            engine, samples, tok.decode, batch_size=config.batch_size, shards=shards, progress=show
        )
        return records, tasks.summarize_retrieval(records)
    if config.task == "ppl_by_position":
        ablated = Engine(model_cfg, params, reset_memory=True, **engine_kw)
        records, summary = [], {"by_length": {}}
        for length in config.lengths:
            docs = _long_documents(config, tok.encode, length)
            nll, count = tasks.nll_by_segment(
                engine, docs, batch_size=config.batch_size, shards=shards
            )
            per = {"memory": nll / np.maximum(count, 1)}
            if model_cfg.attention == "infini":
                nll0, _ = tasks.nll_by_segment(
                    ablated, docs, batch_size=config.batch_size, shards=shards
                )
                per["no_memory"] = nll0 / np.maximum(count, 1)
            for i in range(len(count)):
                rec = {"task": config.task, "length": length, "segment": i, "tokens": int(count[i])}
                records.append(rec | {f"nll_{k}": float(v[i]) for k, v in per.items()})
            summary["by_length"][str(length)] = {
                f"nll_{k}": float(np.sum(v * count) / count.sum()) for k, v in per.items()
            } | {f"nll_{k}_by_segment": [float(x) for x in v] for k, v in per.items()}
        return records, summary
    # memory_stats
    records, summary = report.gate_records(model_cfg, params), {"by_length": {}}
    engine = Engine(model_cfg, params, memory_stats=True, **engine_kw)
    for length in config.lengths:
        docs = _long_documents(config, tok.encode, length)
        growth = tasks.memory_growth(engine, docs, batch_size=config.batch_size, shards=shards)
        pairs = zip(growth["memory_norm"], growth["memory_z"], strict=True)
        for i, (norm, z) in enumerate(pairs):
            for layer in range(model_cfg.num_layers):
                records.append(
                    {
                        "task": config.task,
                        "kind": "memory",
                        "length": length,
                        "segment": i,
                        "layer": layer,
                        "memory_norm": float(norm[layer]),
                        "memory_z": float(z[layer]),
                    }
                )
        summary["by_length"][str(length)] = {k: v.tolist() for k, v in growth.items()}
    if config.lengths and (model_cfg.write_strength or model_cfg.decay != "none"):
        # the memory's write gates, over the last length's documents
        gates = tasks.write_gate_means(model_cfg, params, docs, batch_size=config.batch_size)
        for name, values in gates.items():
            records += [
                {"task": config.task, "kind": name, "layer": i, "head": h, name: float(x)}
                for i, row in enumerate(values)
                for h, x in enumerate(row)
            ]
            summary[f"{name}_by_layer"] = values.tolist()
    return records, summary | report.gate_summary(records)

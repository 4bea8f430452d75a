r"""Inspection without writing a script: what a workdir holds, and what the model sees.

  python -m infini_jax.show checkpoint --workdir=DIR [--step=N] [--diff=OTHER] [--tree] [--verify]
  python -m infini_jax.show batch --config=configs/x.py[:preset] --workdir=DIR [--config.a=b]
      [--split=train] [--skip=N] [--rows=2] [--batches=200]

`checkpoint` reads only metadata and JSON (no arrays): the steps present and whether each is
intact (committed, its tree and JSON readable; `--verify` also reads every array, one step at
a time), the config (or its differences from `--diff`'s), the parameter tree grouped as in
`plan` (shapes, dtypes, bytes), the data iterator's position and the last metrics. Works on
`gs://` workdirs.

`batch` draws batches exactly as training does (same config, seed and tokenizer: the one in
DIR, or the built-in one trained there) and prints rows as the model sees them: the text of
each memory segment, document starts, padding, and for Infini models what the memory does at
the segment's end (written for a document, reset for a new one, unchanged by padding); then
the mixture actually drawn over `--batches` batches against `data.weights`.
"""

import json
from collections.abc import Iterable

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from infini_jax import storage
from infini_jax.config import validate
from infini_jax.data import pipeline
from infini_jax.data.config import DataConfig
from infini_jax.errors import CheckpointError, Error
from infini_jax.planning.plan import human_bytes, param_group
from infini_jax.training import checkpoint

HANDLERS = {
    "state": ocp.PyTreeCheckpointHandler(),
    "config": ocp.JsonCheckpointHandler(),
    "data": ocp.JsonCheckpointHandler(),
}


def _manager(workdir: str) -> ocp.CheckpointManager:
    ckpt = storage.join(workdir, "checkpoints")
    if not storage.isdir(ckpt):
        raise CheckpointError(f"no checkpoints in {workdir}; pass a training workdir")
    options = ocp.CheckpointManagerOptions(read_only=True)
    return ocp.CheckpointManager(ckpt, options=options, item_handlers=HANDLERS)


def _flat(tree: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def _step_status(mngr: ocp.CheckpointManager, step: int, verify: bool) -> tuple[str, object]:
    """("intact" or "unreadable (why)", the state's tree metadata or None)."""
    try:
        tree = mngr.item_metadata(step)["state"].tree
        checkpoint.saved_config(mngr, step)
        mngr.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))
        if verify:
            device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
            target = jax.tree.map(
                lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree
            )
            restored = mngr.restore(
                step, args=ocp.args.Composite(state=checkpoint.partial_restore(target))
            )["state"]
            missing = checkpoint.missing_leaves(restored, target)
            if missing:
                return f"unreadable ({len(missing)} arrays missing, e.g. {missing[0]})", tree
    except Exception as e:  # noqa: BLE001 - orbax and tensorstore raise many kinds
        return f"unreadable ({storage.reason(e)})", None
    return ("intact (every array read)" if verify else "intact"), tree


def _kind(mngr: ocp.CheckpointManager, step: int) -> str:
    """ ", temporary" for a checkpoint off the step schedule (by time, or at a SIGTERM): the
    next checkpoint replaces it (`training.checkpoint.Retention`)."""
    config = checkpoint.saved_config(mngr, step)
    on_schedule = step % config["checkpoint_every_steps"] == 0 or step == config["total_steps"]
    return "" if on_schedule else ", temporary (by time or at a SIGTERM)"


def params_table(tree: dict, detail: bool) -> list[str]:
    """Lines: the parameters by `plan` group (tensors, parameters, bytes, dtypes); with
    `detail`, every tensor's path, shape, dtype and bytes."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    groups: dict[str, list] = {}
    rows = []
    for path, meta in leaves:
        keys = tuple(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
        n = int(np.prod(meta.shape, dtype=np.int64))
        size = n * np.dtype(meta.dtype).itemsize
        g = groups.setdefault(param_group(keys), [0, 0, 0, set()])
        g[0], g[1], g[2] = g[0] + 1, g[1] + n, g[2] + size
        g[3].add(str(np.dtype(meta.dtype)))
        rows.append(f"  {'.'.join(keys)}  {tuple(meta.shape)}  {np.dtype(meta.dtype)}  {size:,}")
    total = [sum(g[i] for g in groups.values()) for i in range(3)]
    lines = ["| group | tensors | parameters | bytes | dtypes |", "|---|---|---|---|---|"]
    for name, (t, n, size, dtypes) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
        lines.append(
            f"| {name} | {t} | {n:,} | {human_bytes(size)} | {', '.join(sorted(dtypes))} |"
        )
    lines.append(f"| all | {total[0]} | {total[1]:,} | {human_bytes(total[2])} | |")
    return lines + (["", *rows] if detail else [])


def _state_bytes(tree) -> int:
    return sum(
        int(np.prod(m.shape, dtype=np.int64)) * np.dtype(m.dtype).itemsize
        for m in jax.tree.leaves(tree)
    )


def describe(
    workdir: str, step: int | None, other: str = "", tree: bool = False, verify: bool = False
) -> str:
    """The `checkpoint` report of `workdir` (see the module docstring)."""
    workdir = storage.absolute(workdir)
    mngr = _manager(workdir)
    steps = mngr.all_steps()
    if not steps:
        raise CheckpointError(f"no checkpoint steps in {workdir}/checkpoints")
    if step is not None and step not in steps:
        raise CheckpointError(f"checkpoint step {step} not in {workdir} (steps saved: {steps})")
    lines = [f"# {workdir}", "", "## Checkpoint steps", ""]
    trees = {}
    for s in steps:
        status, trees[s] = _step_status(mngr, s, verify)
        lines.append(f"- {s}: {status}{_kind(mngr, s) if trees[s] is not None else ''}")
    aside = storage.join(workdir, "corrupt_checkpoints")
    if storage.isdir(aside):
        lines.append(f"- set aside as unreadable: {sorted(storage.listdir(aside))} ({aside})")
    intact = [s for s in steps if trees[s] is not None]
    if not intact:
        return "\n".join(lines)
    step = step if step is not None else intact[-1]
    if trees[step] is None:
        raise CheckpointError(f"checkpoint step {step} in {workdir} is unreadable; pick another")
    config = checkpoint.saved_config(mngr, step)
    data = mngr.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))["data"]
    lines += ["", f"## Config (step {step})", ""]
    lines += config_lines(config, other)
    state = trees[step]
    opt_bytes = _state_bytes(state.get("opt_state", {}))
    lines += ["", f"## Parameters (step {step}; optimizer state {human_bytes(opt_bytes)})", ""]
    lines += params_table(state["params"], tree)
    lines += ["", f"## Data iterator (step {step})", "", json.dumps(data)]
    lines += ["", *last_metrics(workdir)]
    mngr.close()
    return "\n".join(lines)


def config_lines(config: dict, other: str) -> list[str]:
    """Every config field (`field = value`), or with `other` (a workdir) the fields that
    differ from its config.json."""
    mine = _flat(config)
    if not other:
        return [f"{k} = {v!r}" for k, v in sorted(mine.items())]
    path = storage.join(storage.absolute(other), "config.json")
    if not storage.exists(path):
        raise Error(f"{path} does not exist; --diff takes another training workdir")
    theirs = _flat(checkpoint.with_defaults(storage.read_json(path)))
    differ = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
    if not differ:
        return [f"the same as {other}'s config"]
    return [f"{k}: {mine.get(k)!r} here vs {theirs.get(k)!r} in {other}" for k in differ]


def last_metrics(workdir: str) -> list[str]:
    path = storage.join(workdir, "metrics.jsonl")
    if not storage.exists(path):
        return ["## Last metrics", "", "(no metrics.jsonl)"]
    rows = storage.read_jsonl(path)
    if not rows:
        return ["## Last metrics", "", "(metrics.jsonl is empty)"]
    last = rows[-1]

    def shown(v):
        return "[" + ", ".join(f"{x:.4g}" for x in v) + "]" if isinstance(v, list) else f"{v:.4g}"

    return [f"## Last metrics (step {last['step']})", ""] + [
        f"{k} = {shown(v)}" for k, v in last.items() if k != "step"
    ]


def batches(
    config: ml_collections.ConfigDict, workdir: str, split: str
) -> tuple[Iterable, object, object]:
    """The global batches training draws (with each token's source), the tokenizer and the
    model config."""
    model_cfg = validate(config)
    data = DataConfig.from_config(config.data)
    storage.makedirs(workdir)
    tok = pipeline.resolve_tokenizer(data, workdir, model_cfg.vocab_size, config.seed, model_cfg)
    ds = pipeline.make_dataset(
        data,
        tokenizer_path=tok.path,
        seed=config.seed,
        batch_size=data.batch_size,
        split=split,
        tag_sources=True,
    )
    return ds, tok, model_cfg


def row_lines(row: dict[str, np.ndarray], tok, segment_len: int, infini: bool) -> list[str]:
    """One row, memory segment by memory segment: its text by document (⟦doc d⟧ at a start,
    ⟦pad ×n⟧ for padding), and what the memory does at the segment's end."""
    tokens, ids, mask = row["tokens"], row["segment_ids"], row["mask"]
    lines, memory_doc = [], None
    for start in range(0, len(tokens), segment_len):
        sl = slice(start, start + segment_len)
        seg_ids, seg_mask, seg_tokens = ids[sl], mask[sl], tokens[sl]
        parts, i = [], 0
        while i < len(seg_tokens):
            j = i
            while j < len(seg_tokens) and seg_ids[j] == seg_ids[i] and seg_mask[j] == seg_mask[i]:
                j += 1
            if not seg_mask[i]:
                parts.append(f"⟦pad ×{j - i}⟧")
            else:
                first = start + i == 0 or ids[start + i - 1] != seg_ids[i]
                text = tok.decode(seg_tokens[i:j])
                parts.append((f"⟦doc {seg_ids[i]}⟧" if first else "") + text)
            i = j
        note = ""
        if infini:
            last = seg_ids[seg_mask][-1] if seg_mask.any() else None
            if last is None:
                note = "memory unchanged (padding only)"
            elif last != memory_doc:
                fresh = "from empty" if memory_doc is None else "reset first"
                note = f"memory written for doc {last} ({fresh})"
                memory_doc = last
            else:
                note = f"memory written for doc {last}"
        span = f"tokens {start}-{start + len(seg_tokens) - 1}"
        lines.append(f"[segment {start // segment_len}: {span}{'; ' + note if note else ''}]")
        lines.append("".join(parts))
    return lines


def mixture_lines(drawn: Iterable[dict], data: DataConfig, n: int) -> list[str]:
    """The share of documents (their first tokens) and of tokens drawn from each source over
    `n` batches, against the shares `data.weights` asks for (documents are mixed by weight;
    token shares also follow the sources' document lengths)."""
    docs = np.zeros(len(data.sources))
    toks = np.zeros(len(data.sources))
    for _, batch in zip(range(n), drawn, strict=False):
        src = batch["sources"]
        starts = batch["positions"] == 0  # a document's first token (not a row's)
        for k in range(len(data.sources)):
            docs[k] += np.sum(starts & (src == k))
            toks[k] += np.sum(src == k)
    weights = np.asarray(data.mixture_weights or [1.0] * len(data.sources), np.float64)
    weights = np.where(data.trained, weights, 0.0)
    lines = [
        f"## Mixture over {n} batches",
        "",
        "| source | weight share | documents | tokens |",
        "|---|---|---|---|",
    ]
    for k, name in enumerate(data.names):
        lines.append(
            f"| {name} | {weights[k] / weights.sum():.1%} | {docs[k] / max(docs.sum(), 1):.1%} "
            f"| {toks[k] / max(toks.sum(), 1):.1%} |"
        )
    return lines


def show_batches(
    config: ml_collections.ConfigDict, workdir: str, split: str, skip: int, rows: int, n: int
) -> str:
    """The `batch` report (see the module docstring)."""
    drawn, tok, model_cfg = batches(config, workdir, split)
    data = DataConfig.from_config(config.data)
    it = iter(drawn)
    for _ in range(skip):
        next(it)
    batch = next(it)
    seg = model_cfg.segment_len if model_cfg.attention != "full" else data.seq_len
    infini = model_cfg.attention == "infini"
    lines = [
        f"# Batch {skip + 1} of {split} ({data.batch_size} × {data.seq_len} tokens, packing "
        f"{data.packing!r}, {'memory ' if infini else ''}segments of {seg})",
    ]
    for r in range(min(rows, len(batch["tokens"]))):
        row = {k: v[r] for k, v in batch.items()}
        real = int(row["mask"].sum())
        names = sorted({data.names[s] for s in row["sources"][row["mask"]]})
        lines += [
            "",
            f"## Row {r}: {real} tokens, {data.seq_len - real} padding; from {', '.join(names)}",
            "",
        ]
        lines += row_lines(row, tok, seg, infini)
    lines += ["", *mixture_lines(iter(drawn), data, n)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from absl import flags
    from ml_collections import config_flags

    from infini_jax import cli

    config_flags.DEFINE_config_file("config", None, "batch: the run's config file[:preset].")
    flags.DEFINE_string("workdir", None, "The training workdir (batch: where its tokenizer is).")
    flags.DEFINE_integer("step", None, "checkpoint: the step to describe (default: the latest).")
    flags.DEFINE_string(
        "diff", "", "checkpoint: show only how the config differs from this workdir's."
    )
    flags.DEFINE_bool("tree", False, "checkpoint: also list every parameter tensor.")
    flags.DEFINE_bool("verify", False, "checkpoint: read every array of every step (slow).")
    flags.DEFINE_enum("split", "train", list(pipeline.SPLITS), "batch: which split.")
    flags.DEFINE_integer(
        "skip", 0, "batch: batches to skip first (batch skip+1 is shown).", lower_bound=0
    )
    flags.DEFINE_integer("rows", 2, "batch: rows shown.", lower_bound=1)
    flags.DEFINE_integer("batches", 200, "batch: batches counted for the mixture.", lower_bound=1)

    def run(args):
        from absl import logging

        logging.set_verbosity(logging.ERROR)  # orbax's notes on opening a directory read-only
        f = flags.FLAGS
        what = args[1] if len(args) > 1 else ""
        if what not in ("checkpoint", "batch") or len(args) > 2:
            raise Error("usage: python -m infini_jax.show checkpoint|batch --workdir=DIR [...]")
        cli.require("workdir")
        if what == "checkpoint":
            print(describe(f.workdir, f.step, f.diff, f.tree, f.verify))
        else:
            cli.require("config")
            print(show_batches(f.config, f.workdir, f.split, f.skip, f.rows, f.batches))

    cli.run(run, argv)


if __name__ == "__main__":
    main()

"""Writing evaluation results: results.jsonl, summary.json, plots, report.md, console table."""

import json

import ml_collections
import numpy as np

from infini_jax import ops, storage
from infini_jax.eval import plots
from infini_jax.model.config import ModelConfig


def gate_records(model_cfg: ModelConfig, params) -> list[dict]:
    """g(b) of every layer and head of an infini model."""
    g = np.asarray(ops.gate_value(params["layers"]["attention"]["balance"], model_cfg.gate))
    return [
        {"task": "memory_stats", "kind": "gate", "layer": i, "head": h, "gate": float(g[i, h])}
        for i in range(g.shape[0])
        for h in range(g.shape[1])
    ]


def gate_summary(records: list[dict]) -> dict:
    """Per layer every head's g and their mean, and the share of heads leaning local (g < 0.1)
    or memory (g > 0.9)."""
    gates = [r for r in records if r.get("kind") == "gate"]
    g = np.asarray([r["gate"] for r in gates])
    layers = sorted({r["layer"] for r in gates})
    by_layer = [[r["gate"] for r in gates if r["layer"] == i] for i in layers]
    return {
        "gate_by_layer": by_layer,
        "gate_mean_by_layer": [float(np.mean(x)) for x in by_layer],
        "heads_local": float(np.mean(g < 0.1)),
        "heads_memory": float(np.mean(g > 0.9)),
        "heads_mixed": float(np.mean((g >= 0.1) & (g <= 0.9))),
    }


def _retrieval_plots(output: str, summary: dict, title: str) -> list[str]:
    plots.heatmap(summary, storage.join(output, "heatmap.png"), title)
    curves = (
        ("by_length", "accuracy_by_length.png", "context length (tokens)"),
        (
            "by_segments_back",
            "accuracy_by_segments_back.png",
            "segments between needle and question",
        ),
    )
    for key, name, xlabel in curves:
        values = list(summary[key])
        plots.curve(
            [int(v) for v in values],
            {"exact match": [summary[key][v]["accuracy"] for v in values]},
            storage.join(output, name),
            xlabel=xlabel,
            ylabel="accuracy",
            title=title,
        )
    return ["heatmap.png", "accuracy_by_length.png", "accuracy_by_segments_back.png"]


def write(
    output: str,
    c: ml_collections.ConfigDict,
    model_cfg: ModelConfig,
    records: list[dict],
    summary: dict,
) -> None:
    storage.write_text(
        storage.join(output, "results.jsonl"), "".join(json.dumps(r) + "\n" for r in records)
    )
    storage.write_text(storage.join(output, "summary.json"), json.dumps(summary, indent=1))
    title = f"{c.task}: {model_cfg.attention}" + (" (memory ablated)" if c.ablate_memory else "")
    if c.task in ("passkey", "niah"):
        images = _retrieval_plots(output, summary, title)
    elif c.task == "ppl_by_position":
        images = []
        for length, s in summary["by_length"].items():
            series = {k[4:-11]: v for k, v in s.items() if k.endswith("_by_segment")}
            name = f"nll_by_segment_{length}.png"
            xs = list(range(len(next(iter(series.values())))))
            plots.curve(
                xs,
                series,
                storage.join(output, name),
                xlabel="segment index",
                ylabel="NLL (nats/token)",
                title=f"{title}, {length} tokens",
            )
            images.append(name)
    else:
        g = np.asarray([r["gate"] for r in records if r.get("kind") == "gate"])
        plots.histogram(g, storage.join(output, "gates.png"), xlabel="g(b)", title=title)
        images = ["gates.png"]
        for length, s in summary["by_length"].items():
            norm = np.asarray(s["memory_norm"])
            name = f"memory_growth_{length}.png"
            plots.curve(
                list(range(len(norm))),
                {f"layer {i}": norm[:, i].tolist() for i in range(norm.shape[1])},
                storage.join(output, name),
                xlabel="segment index",
                ylabel="‖M‖_F (mean over kv heads)",
                title=f"{title}, {length} tokens",
            )
            images.append(name)
    m = model_cfg
    model = (
        f"{m.attention} attention, {m.num_layers} layers, d_model {m.d_model}, "
        f"{m.num_heads} heads ({m.num_kv_heads} kv), segment {m.segment_len}"
    )
    lines = [
        f"# Evaluation: {title}",
        "",
        f"Checkpoint: {summary['run']['checkpoint']}. Model: {model}. "
        f"Took {summary['run']['seconds']:.0f} s.",
        "",
        "```",
        table(c.task, summary),
        "```",
        "",
        *[f"![{name}]({name})" for name in images],
        "",
        "## Config",
        "",
        "```json",
        json.dumps(c.to_dict(), indent=1),
        "```",
    ]
    storage.write_text(storage.join(output, "report.md"), "\n".join(lines) + "\n")


def table(task: str, summary: dict) -> str:
    """A plain-text table for the console and the report."""
    if task in ("passkey", "niah"):
        depths = list(summary["by_depth"])
        lengths = list(summary["by_length"])
        rows = [f"{'depth':>7} " + " ".join(f"{n:>7}" for n in lengths)]
        for d in depths:
            cells = [summary["by_depth_length"][f"{d},{n}"]["accuracy"] for n in lengths]
            rows.append(f"{d + '%':>7} " + " ".join(f"{a:>7.0%}" for a in cells))
        totals = [summary["by_length"][n]["accuracy"] for n in lengths]
        rows.append(f"{'all':>7} " + " ".join(f"{a:>7.0%}" for a in totals))
        o = summary["overall"]
        digits = f", digit accuracy {o['digit_accuracy']:.0%}" if o["digit_accuracy"] else ""
        rows.append(f"overall exact match {o['accuracy']:.1%} of {o['n']}{digits}")
        backs = " ".join(f"{b}:{s['accuracy']:.0%}" for b, s in summary["by_segments_back"].items())
        rows.append(f"by segments back: {backs}")
        return "\n".join(rows)
    if task == "ppl_by_position":
        rows = []
        for length, s in summary["by_length"].items():
            for k in (k for k in s if k.endswith("_by_segment")):
                values = " ".join(f"{x:.3f}" for x in s[k])
                rows.append(f"{length} {k[4:-11]:>9}: mean {s[k[:-11]]:.4f}; by segment {values}")
        return "\n".join(rows)
    g = summary
    rows = [
        "g(b) mean by layer: " + " ".join(f"{x:.3f}" for x in g["gate_mean_by_layer"]),
        f"heads local (g<0.1) {g['heads_local']:.0%}, memory (g>0.9) {g['heads_memory']:.0%}, "
        f"mixed {g['heads_mixed']:.0%}",
    ]
    for length, s in summary["by_length"].items():
        last = np.asarray(s["memory_norm"])[-1]
        norms = " ".join(f"{x:.2f}" for x in last)
        rows.append(f"{length}: ‖M‖ after the last segment by layer {norms}")
    return "\n".join(rows)

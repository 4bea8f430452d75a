"""The end-of-run training report in the workdir: loss curve PNG, passkey check, report.md."""

import json

from infini_jax import storage
from infini_jax.eval import plots, tasks
from infini_jax.eval.engine import Engine
from infini_jax.training import goodput


def _rows(workdir: str) -> list[dict]:
    return storage.read_jsonl(storage.join(workdir, "metrics.jsonl"))


def loss_curve(workdir: str) -> str:
    rows = _rows(workdir)
    path = storage.join(workdir, "loss.png")
    plots.curve(
        [r["step"] for r in rows],
        {"train": [r["loss"] for r in rows]},
        path,
        xlabel="step",
        ylabel="train loss (nats/token)",
        title=storage.basename(workdir),
        marker=None,
    )
    return path


def write_report(workdir: str, config, model_cfg, params, tokenizer) -> dict:
    """Writes loss.png, passkey.json, heatmap.png and report.md; returns the passkey summary.

    The passkey check is the evaluation harness's (`infini_jax.eval`) at 1×, 4×, 16× ... the
    training length, 5 depths. For Infini models it runs twice: with the memory, and with its
    reads ablated (every segment gets an empty memory), so the report shows what memory adds.
    """
    lengths = [config.data.seq_len * m for m in config.report.passkey_multiples]
    grid = tasks.Grid(lengths, (0, 25, 50, 75, 100), config.report.passkey_samples, config.seed + 1)
    samples = tasks.passkey_samples(tokenizer.encode, grid, config.data.synthetic.key_digits)

    def score(**kw):
        records = tasks.score_retrieval(
            Engine(model_cfg, params, **kw), samples, tokenizer.decode, batch_size=8
        )
        return records, tasks.summarize_retrieval(records)

    records, summary = score()
    saved = {"summary": summary, "samples": records}
    if model_cfg.attention == "infini":
        saved["samples_memory_ablated"], ablated = score(reset_memory=True)
        summary["memory_ablated"] = {
            k: ablated[k]
            for k in ("overall", "by_length", "by_segments_back", "beyond_first_segment")
        }
    storage.write_text(
        storage.join(workdir, "passkey.json"),
        json.dumps(saved, indent=1),
    )
    loss_curve(workdir)
    plots.heatmap(summary, storage.join(workdir, "heatmap.png"), f"passkey: {model_cfg.attention}")
    ablated = summary.get("memory_ablated")
    lines = [
        f"# Run report: {model_cfg.attention} attention",
        "",
        f"{config.total_steps} steps of batch {config.data.batch_size} × "
        f"{config.data.seq_len} tokens, segment {model_cfg.segment_len}.",
        "",
        "![loss](loss.png)",
        *eval_section(workdir),
        *validation_table(workdir),
        *goodput.report_lines(workdir),
        "",
        "## Passkey (teacher-forced exact match; digit accuracy in brackets)",
        "",
        "![heatmap](heatmap.png)",
    ]

    def cell(s):
        digits = f" ({s['digit_accuracy']:.0%})" if s["digit_accuracy"] is not None else ""
        return f"{s['accuracy']:.0%}{digits}"

    for key, name in (("by_length", "length"), ("by_segments_back", "segments back")):
        extra = " memory reads ablated |" if ablated else ""
        lines += [
            "",
            f"| {name} | accuracy |{extra} samples |",
            "|---" * (4 if ablated else 3) + "|",
        ]
        for value, s in summary[key].items():
            extra = f" {cell(ablated[key][value])} |" if ablated else ""
            lines.append(f"| {value} | {cell(s)} |{extra} {s['n']} |")
    lines += memory_table(workdir)
    storage.write_text(storage.join(workdir, "report.md"), "\n".join(lines) + "\n")
    return summary


RETRIEVAL = ("/accuracy", "/beyond_first_segment")  # the in-training evals' curves


def eval_section(workdir: str) -> list[str]:
    """report.md lines for `config.evals`: retrieval accuracy against the training step
    (evals.png, where the memory's phase change shows), the last values, and the share of
    the run's wall time spent in them (nothing when the run had none)."""
    all_rows = _rows(workdir)
    rows = [r for r in all_rows if any(k.startswith("eval/") for k in r)]
    if not rows:
        return []
    keys = sorted({k for r in rows for k in r if k.startswith("eval/") and k.endswith(RETRIEVAL)})
    if keys:
        steps = [r["step"] for r in rows]
        series = {k.removeprefix("eval/"): [r.get(k, float("nan")) for r in rows] for k in keys}
        plots.curve(
            steps,
            series,
            storage.join(workdir, "evals.png"),
            xlabel="step",
            ylabel="exact match",
            title="retrieval during training",
        )
    previous, train_s = 0, 0.0
    for r in all_rows:  # each line's step time covers the steps since the previous line
        if "step_time_s" in r:
            train_s += r["step_time_s"] * (r["step"] - previous)
            previous = r["step"]
    eval_s = sum(v for r in rows for k, v in r.items() if k.endswith("/seconds"))
    share = eval_s / max(train_s + eval_s, 1e-9)
    last = rows[-1]
    lines = ["", "## Evaluations during training (`config.evals`)", ""]
    lines += ["![evals](evals.png)", ""] if keys else []
    lines += [
        f"{len(rows)} evaluation points; they took {eval_s:.0f} s, {share:.1%} of the wall time "
        f"of training and evaluation ({train_s:.0f} s training).",
        "",
        f"| at step {last['step']} | value |",
        "|---|---|",
    ]
    for k in sorted(k for k in last if k.startswith("eval/") and not k.endswith("/seconds")):
        value = last[k]
        shown = ", ".join(f"{v:.3g}" for v in value) if isinstance(value, list) else f"{value:.3g}"
        lines.append(f"| {k.removeprefix('eval/')} | {shown} |")
    return lines


def validation_table(workdir: str) -> list[str]:
    """report.md lines: the last validation per data source (nats per token, bits per byte)
    with the micro and macro averages (nothing when the run did not validate)."""
    last = next((r for r in reversed(_rows(workdir)) if "val/micro/loss" in r), None)
    if last is None:
        return []
    names = [k[4:-5] for k in last if k.startswith("val/") and k.endswith("/loss")]
    names = [n for n in names if n not in ("micro", "macro")] + ["micro", "macro"]
    lines = [
        "",
        f"## Validation by source (step {last['step']})",
        "",
        "| source | loss (nats/token) | bits per byte |",
        "|---|---|---|",
    ]
    for name in names:
        shown = {"micro": "all (micro: pooled)", "macro": "all (macro: mean of sources)"}
        loss, bpb = last[f"val/{name}/loss"], last[f"val/{name}/bpb"]
        lines.append(f"| {shown.get(name, name)} | {loss:.4f} | {bpb:.4f} |")
    return lines


def memory_table(workdir: str) -> list[str]:
    """report.md lines: per layer, the memory's ‖M‖_F and Σz and the gates g(b) at the last
    logged step (Infini models; nothing otherwise)."""
    rows = _rows(workdir)
    last = next((r for r in reversed(rows) if "memory_norm" in r), None)
    if last is None:
        return []
    lines = [
        "",
        f"## Memory and balance factors (step {last['step']}, last training batch)",
        "",
        "| layer | ‖M‖_F | Σz | g(b) mean | g(b) min | g(b) max |",
        "|---|---|---|---|---|---|",
    ]
    names = ("memory_norm", "memory_z", "gate_mean", "gate_min", "gate_max")
    for layer, values in enumerate(zip(*(last[n] for n in names), strict=True)):
        lines.append(f"| {layer} | " + " | ".join(f"{v:.3g}" for v in values) + " |")
    return lines


def format_summary(summary: dict) -> str:
    by_len = ", ".join(f"{k}: {v['accuracy']:.0%}" for k, v in summary["by_length"].items())
    beyond = summary["beyond_first_segment"]
    tail = (
        f"; needle in an earlier segment: {beyond['accuracy']:.0%} of {beyond['n']}"
        if beyond
        else ""
    )
    ablated = (summary.get("memory_ablated") or {}).get("beyond_first_segment")
    if ablated:
        tail += f" ({ablated['accuracy']:.0%} with memory reads ablated)"
    return f"passkey accuracy by length {by_len}{tail}"

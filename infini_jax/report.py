"""The end-of-run report in the workdir: loss curve PNG, passkey check, report.md."""

import json
import os

from infini_jax import passkey


def loss_curve(workdir: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    path = os.path.join(workdir, "loss.png")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows])
    ax.set(xlabel="step", ylabel="train loss (nats/token)", title=os.path.basename(workdir))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(workdir: str, config, cfg, params, tokenizer) -> dict:
    """Writes loss.png, passkey.json and report.md; returns the passkey summary."""
    lengths = [config.data.seq_len * m for m in config.report.passkey_multiples]
    records = passkey.passkey_check(
        cfg,
        params,
        tokenizer.encode,
        lengths=lengths,
        samples=config.report.passkey_samples,
        key_digits=config.data.synthetic.key_digits,
        seed=config.seed + 1,
    )
    summary = passkey.summarize(records)
    with open(os.path.join(workdir, "passkey.json"), "w") as f:
        json.dump({"summary": summary, "samples": records}, f, indent=1)
    loss_curve(workdir)
    lines = [
        f"# Run report: {cfg.attention} attention",
        "",
        f"{config.total_steps} steps of batch {config.data.batch_size} × "
        f"{config.data.seq_len} tokens, segment {cfg.segment_len}.",
        "",
        "![loss](loss.png)",
        "",
        "## Passkey (teacher-forced exact match)",
        "",
        "| length | accuracy | samples |",
        "|---|---|---|",
    ]
    for length, s in summary["by_length"].items():
        lines.append(f"| {length} | {s['accuracy']:.0%} | {s['n']} |")
    lines += ["", "| segments back | accuracy | samples |", "|---|---|---|"]
    for back, s in summary["by_segments_back"].items():
        lines.append(f"| {back} | {s['accuracy']:.0%} | {s['n']} |")
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return summary


def format_summary(summary: dict) -> str:
    by_len = ", ".join(f"{k}: {v['accuracy']:.0%}" for k, v in summary["by_length"].items())
    beyond = summary["beyond_first_segment"]
    tail = (
        f"; needle in an earlier segment: {beyond['accuracy']:.0%} of {beyond['n']}"
        if beyond
        else ""
    )
    return f"passkey accuracy by length {by_len}{tail}"

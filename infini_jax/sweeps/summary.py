r"""Sweep results: one row per run (its overrides, last metrics and evaluation figures), grouped
over seeds, written as summary.csv / summary.md and plotted.

  python -m infini_jax.sweep summarize ROOT [--sweep=FILE] [--group=seed] \
      [--columns=passkey*,val_loss] [--field=F --metric=M | --curve=passkey@] [--output=NAME]

`--sweep` keeps only the runs that sweep file defines (several sweeps may share one ROOT and
its common runs).

Columns a run's evaluations add (`sweep` runs them into `RUN/<eval name>/`, see sweep.py):
- passkey / niah: `NAME` (exact match over all cells), `NAME@L` (at length L), `NAME_d0@L`
  (depth 0%, the needle furthest back, at length L), `NAME_beyond` and `NAME_beyond@L` (needle
  before the question's segment: overall, at length L), `NAME_back@K` (needle K..2K-1
  segments back: bins 0, 1, 2-3, 4-7, 8-15, ...);
- ppl_by_position: `NAME@L` (mean NLL, nats/token), `NAME_nomem@L` (memory reads ablated),
  `NAME_seg@I` (NLL of segment I at the longest length);
- memory_stats: `NAME_beta@I` / `NAME_alpha@I` (layer I's mean write strength / decay, where
  the model has them); `NAME_g@I` / `NAME_gmin@I` / `NAME_gmax@I` (mean / lowest / highest g(b) of
  layer I's heads), `NAME_norm@S` (‖M‖_F after segment S, mean over layers, longest length).

`--group=seed` averages the runs that differ only in the seed: each number becomes
"mean ± half the range (n runs)" in summary.md and `COL` / `COL_spread` / `n` in the csv.
"""

import csv
import fnmatch
import io

import numpy as np

from infini_jax import storage
from infini_jax.defaults import base_config
from infini_jax.errors import ConfigError


def _metrics(workdir: str) -> tuple[dict, list[tuple[int, float]]]:
    """The run's last metrics (step, loss, the last validation figures: val_loss and every
    val/<source>/..., skipped updates, largest gradient norm logged) and its loss curve
    `[(step, loss)]`."""
    path = storage.join(workdir, "metrics.jsonl")
    if not storage.exists(path):
        return {}, []
    last, val, grad, curve = {}, {"val_loss": None}, 0.0, []
    for last in storage.read_jsonl(path):
        val |= {k: v for k, v in last.items() if k == "val_loss" or k.startswith("val/")}
        grad = max(grad, last.get("grad_norm") or 0.0)
        if "loss" in last:
            curve.append((last["step"], last["loss"]))
    out = {"step": last.get("step"), "loss": last.get("loss"), **val}
    return out | {"skipped": last.get("skipped"), "max_grad_norm": grad}, curve


def _passkey_report(workdir: str) -> dict:
    """The end-of-run report's passkey check (train.py writes passkey.json)."""
    path = storage.join(workdir, "passkey.json")
    if not storage.exists(path):
        return {}
    s = storage.read_json(path)["summary"]
    beyond = s.get("beyond_first_segment") or {}
    return {
        "passkey": s["overall"]["accuracy"],
        "passkey_beyond_first_segment": beyond.get("accuracy"),
        "passkey_digits_beyond_first_segment": beyond.get("digit_accuracy"),
    }


def _back_bins(by_back: dict) -> dict[int, float]:
    """Accuracy by segments back, in bins [0], [1], [2, 4), [4, 8), [8, 16), ... (keyed by the
    bin's lowest value), weighted by samples."""
    bins: dict[int, list] = {}
    for back, s in by_back.items():
        b = int(back)
        lo = 0 if b == 0 else 1 << (b.bit_length() - 1)
        bins.setdefault(lo, []).append((s["accuracy"], s["n"]))
    return {lo: sum(a * n for a, n in v) / sum(n for _, n in v) for lo, v in sorted(bins.items())}


def flatten(name: str, summary: dict, records: list[dict] | None = None) -> dict:
    """One evaluation's summary.json (and results.jsonl `records`) as flat columns (see the
    module docstring)."""
    task = (summary.get("run") or {}).get("task")
    out: dict = {}
    if task in ("passkey", "niah"):
        out[name] = summary["overall"]["accuracy"]
        out |= {f"{name}@{n}": s["accuracy"] for n, s in summary["by_length"].items()}
        beyond = summary.get("beyond_first_segment")
        out[f"{name}_beyond"] = beyond["accuracy"] if beyond else None
        for n in summary["by_length"]:
            cell = summary.get("by_depth_length", {}).get(f"0,{n}")
            if cell:
                out[f"{name}_d0@{n}"] = cell["accuracy"]  # the seed's headline cell: depth 0
            far = [
                r["correct"] for r in records or () if r["length"] == int(n) and r["segments_back"]
            ]
            if far:  # needles before the question's segment, at this length
                out[f"{name}_beyond@{n}"] = float(np.mean(far))
        bins = _back_bins(summary["by_segments_back"])
        out |= {f"{name}_back@{lo}": a for lo, a in bins.items()}
    elif task == "ppl_by_position":
        by_length = summary["by_length"]
        for n, s in by_length.items():
            out[f"{name}@{n}"] = s["nll_memory"]
            if "nll_no_memory" in s:
                out[f"{name}_nomem@{n}"] = s["nll_no_memory"]
        longest = by_length[max(by_length, key=int)]
        out |= {f"{name}_seg@{i}": v for i, v in enumerate(longest["nll_memory_by_segment"])}
    elif task == "memory_stats":
        # gate_by_layer (every head) is newer than gate_mean_by_layer: older outputs lack it
        for i, g in enumerate(summary.get("gate_by_layer") or []):
            out |= {f"{name}_gmin@{i}": min(g), f"{name}_gmax@{i}": max(g)}
        for i, g in enumerate(summary["gate_mean_by_layer"]):
            out[f"{name}_g@{i}"] = g
        for key in ("beta", "alpha"):
            for i, row in enumerate(summary.get(f"{key}_by_layer") or []):
                out[f"{name}_{key}@{i}"] = float(np.mean(row))
        by_length = summary["by_length"]
        norms = np.asarray(by_length[max(by_length, key=int)]["memory_norm"]).mean(1)
        out |= {f"{name}_norm@{s}": float(v) for s, v in enumerate(norms)}
    return out


def collect(root: str, runs: set[str] | None = None) -> tuple[list[dict], dict[str, list]]:
    """One row per run under `root` (every run, or those named in `runs`: its overrides, last
    metrics and evaluation columns), and each run's loss curve by run name."""
    rows, curves = [], {}
    root = storage.absolute(root)
    for meta in sorted(storage.glob(storage.join(root, "*", "sweep_run.json"))):
        workdir = storage.dirname(meta)
        if runs is not None and storage.basename(workdir) not in runs:
            continue
        info = storage.read_json(meta)
        last, curves[storage.basename(workdir)] = _metrics(workdir)
        row = {"run": storage.basename(workdir), **info["overrides"], **last}
        if info.get("seconds"):
            row["minutes"] = round(info["seconds"] / 60, 1)
        row |= _passkey_report(workdir)
        for summary in sorted(storage.glob(storage.join(workdir, "*", "summary.json"))):
            name = storage.basename(storage.dirname(summary))
            results = storage.join(storage.dirname(summary), "results.jsonl")
            records = None
            if storage.exists(results):
                records = [x for x in storage.read_jsonl(results) if "segments_back" in x]
            row |= flatten(name, storage.read_json(summary), records)
        rows.append(row)
    _fill_fields(rows, root)
    return rows, curves


def _fill_fields(rows: list[dict], root: str) -> None:
    """A run that does not override a field another run sweeps gets the value its saved
    config.json has (e.g. the baseline's model.attention = "infini"), placed with the fields."""
    fields = [f for f in swept_fields(rows) if any(f not in r for r in rows)]
    for i, r in enumerate(rows):
        missing = [f for f in fields if f not in r]
        path = storage.join(root, r["run"], "config.json")
        if not missing or not storage.exists(path):
            continue
        config = storage.read_json(path)
        for f in missing:
            value = config
            for part in f.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            r[f] = value
        head = {k: r[k] for k in ("run", *fields) if k in r}
        rows[i] = head | {k: v for k, v in r.items() if k not in head}


def swept_fields(rows: list[dict]) -> list[str]:
    """The override columns (config fields: dotted or top-level), in first-seen order."""
    top = base_config().keys()
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return [k for k in keys if "." in k or k in top]


def group(rows: list[dict], over: str) -> list[dict]:
    """Rows differing only in `over` merged: numbers → mean, `COL_spread` = half the range
    (over the runs that have the column: `n` counts the group's runs)."""
    keys = [f for f in swept_fields(rows) if f != over]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(repr(r.get(k)) for k in keys), []).append(r)
    out = []
    for members in groups.values():
        parts = [p for p in members[0]["run"].split(",") if not p.startswith(f"{over}=")]
        row = {"run": ",".join(parts) or "base"}  # the group: the run name without `over`
        row |= {k: members[0].get(k) for k in keys}
        row["n"] = len(members)
        for col in dict.fromkeys(c for m in members for c in m):
            values = [m[col] for m in members if m.get(col) is not None]  # runs still going
            if col in keys or col in ("run", over) or not values or not _all_numbers(values):
                continue
            row[col] = float(np.mean(values))
            row[f"{col}_spread"] = float(np.max(values) - np.min(values)) / 2
        out.append(row)
    return out


def _all_numbers(values: list) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def select(rows: list[dict], patterns: str) -> list[str]:
    """The columns to show: the swept fields, then those matching the comma-separated globs."""
    keys = list(dict.fromkeys(k for r in rows for k in r if not k.endswith("_spread")))
    fields = [k for k in keys if k in swept_fields(rows) or k in ("run", "n")]
    if not patterns:
        return keys
    chosen = [k for p in patterns.split(",") for k in keys if fnmatch.fnmatchcase(k, p)]
    if not chosen:
        raise ConfigError(f"--columns={patterns} matches no column; columns are {keys}")
    return list(dict.fromkeys(fields + chosen))


def markdown(rows: list[dict], columns: list[str]) -> str:
    def cell(r, c):
        v = r.get(c)
        if v is None:
            return ""
        if not isinstance(v, float):
            return str(v)
        spread = r.get(f"{c}_spread")
        return f"{v:.3g}" if spread is None else f"{v:.3g} ± {spread:.2g}"

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r, c) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_csv(rows: list[dict], path: str) -> None:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, columns)
    writer.writeheader()
    writer.writerows(rows)
    storage.write_text(path, table.getvalue())


def summarize(
    root: str,
    metric: str = "loss",
    field: str | None = None,
    group_over: str = "",
    columns: str = "",
    curve: str = "",
    output: str = "summary",
    runs: set[str] | None = None,
) -> list[dict]:
    """Writes ROOT/<output>.csv (every run, or those named in `runs`), <output>.md,
    <output>.png and <output>_loss.png (every run's loss curve); returns the rows shown
    (grouped over `group_over` when set)."""
    rows, curves = collect(root, runs)
    if not rows:
        raise ConfigError(f"{root} holds no sweep runs (no */sweep_run.json); run the sweep first")
    root = storage.absolute(root)
    write_csv(rows, storage.join(root, f"{output}.csv"))
    shown = group(rows, group_over) if group_over else rows
    if group_over:
        write_csv(shown, storage.join(root, f"{output}_grouped.csv"))
    text = markdown(shown, select(shown, columns))
    storage.write_text(storage.join(root, f"{output}.md"), text)
    print(text, end="")
    png = storage.join(root, f"{output}.png")
    title = f"{storage.basename(root)}: {output}" + (
        f" (mean of {group_over}s)" if group_over else ""
    )
    if curve:
        plot_curve(shown, curve, png, title)
    else:
        plot_metric(shown, metric, field, png, title)
    plot_losses(rows, curves, storage.join(root, f"{output}_loss.png"), title)
    return shown


def plot_losses(rows: list[dict], curves: dict[str, list], path: str, title: str) -> None:
    """Every run's training loss against the step (a run whose metrics are missing is left
    out)."""
    from infini_jax.eval import plots

    runs = [r["run"] for r in rows if curves.get(r["run"])]
    steps = sorted({s for r in runs for s, _ in curves[r]})
    if not steps:
        return
    series = {r: [dict(curves[r]).get(s, float("nan")) for s in steps] for r in runs}
    plots.curve(
        steps, series, path, xlabel="step", ylabel="training loss", title=title, marker=None
    )


def _label(row: dict, fields: list[str]) -> str:
    return ", ".join(f"{f.rsplit('.', 1)[-1]}={row[f]}" for f in fields) or row["run"]


def plot_curve(rows: list[dict], prefix: str, path: str, title: str) -> None:
    """Columns `PREFIX<x>` (e.g. passkey@256, passkey@1024) against x, a line per row."""
    from infini_jax.eval import plots

    xs = sorted(
        {
            int(k[len(prefix) :])
            for r in rows
            for k in r
            if k.startswith(prefix) and k[len(prefix) :].isdigit()
        }
    )
    if not xs:
        raise ConfigError(f"--curve={prefix}: no column is named {prefix}<number>")
    fields = [f for f in swept_fields(rows) if len({repr(r.get(f)) for r in rows}) > 1]
    series = {_label(r, fields): [r.get(f"{prefix}{x}", float("nan")) for x in xs] for r in rows}
    log = min(xs) > 0 and max(xs) >= 10 * min(xs)
    plots.curve(
        xs,
        series,
        path,
        xlabel=prefix.rstrip("@_"),
        ylabel=prefix.rstrip("@_"),
        title=title,
        xscale="log" if log else "linear",
    )


def plot_metric(rows: list[dict], metric: str, field: str | None, path: str, title: str) -> None:
    """`metric` against `field`, one line per combination of the other swept fields."""
    from infini_jax.eval import plots

    fields = [f for f in swept_fields(rows) if f in rows[0]]
    field = field or (fields[0] if fields else None)
    if field is None or field not in fields:
        raise ConfigError(f"--field={field} is not a swept field; choose one of {fields}")
    others = [f for f in fields if f != field]
    series: dict[str, dict] = {}
    for r in rows:
        if r.get(metric) is None:
            continue
        series.setdefault(_label(r, others) if others else metric, {})[r[field]] = r[metric]
    xs = sorted({x for s in series.values() for x in s}, key=_sort_key)
    numeric = _all_numbers(xs)
    log = numeric and min(xs) > 0 and max(xs) >= 10 * min(xs)
    plots.curve(
        xs if numeric else [str(x) for x in xs],
        {label: [s.get(x, float("nan")) for x in xs] for label, s in series.items()},
        path,
        xlabel=field,
        ylabel=metric,
        title=title,
        xscale="log" if log else "linear",
    )


def _sort_key(x):
    return (0, x, "") if isinstance(x, int | float) else (1, 0, str(x))

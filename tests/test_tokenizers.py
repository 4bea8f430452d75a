"""Hugging Face tokenizer.json: trained here as byte-level BPE, loaded from a file or a
`save_pretrained` directory, checked against `transformers`, and used end to end in training."""

import json
import re

import numpy as np
import pytest
import transformers

from infini_jax import train
from infini_jax.config import load_config
from infini_jax.data import tokenizer
from infini_jax.errors import TokenizerError
from tests.conftest import config_path, run_cli

TEXTS = [
    "The pass key is 71432. Remember it. Ünïcode ok, emoji 🙂 and tabs\there.",
    " What is the value of key 4821? The value of key 4821 is 90210.",
    "",
]


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    """A 512-token byte-level BPE trained by the CLI on the built-in synthetic corpus."""
    tmp = tmp_path_factory.mktemp("bpe")
    with open(tmp / "corpus.jsonl", "w") as f:
        for text in tokenizer.synthetic_texts(0, 400):
            f.write(json.dumps({"text": text}) + "\n")
    out = tmp / "tokenizer.json"
    args = ["train", "--kind=bpe", f"--input={tmp}/corpus.jsonl", "--vocab_size=512"]
    r = run_cli("infini_jax.data.tokenizer", *args, f"--output={out}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert re.search(r"wrote .*tokenizer.json: \d+ tokens", r.stdout)
    return tokenizer.load(str(out))


def test_trained_bpe_round_trips_splits_digits_and_has_fixed_special_ids(bpe):
    # The synthetic corpus runs out of merges before 512 (its words are few).
    assert bpe.kind == "tokenizer.json" and 300 < bpe.vocab_size <= 512
    assert (bpe.pad_id, bpe.bos_id, bpe.eos_id) == (0, 2, 3)
    for text in TEXTS:
        assert bpe.decode(bpe.encode(text)) == text  # byte-level: nothing is unknown
    digits = bpe.encode("71432")
    assert [bpe.decode([i]) for i in digits] == list("71432")
    assert bpe.tok.token_to_id("</s>") == 3 and 3 not in bpe.encode("a </s>-free text")


def test_bpe_ids_equal_transformers_fast_tokenizer(bpe):
    """An independent reader of the same file: transformers' PreTrainedTokenizerFast."""
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=bpe.path)
    for text in TEXTS:
        ids = hf(text, add_special_tokens=False)["input_ids"]
        assert bpe.encode(text) == ids
        assert bpe.decode(ids) == hf.decode(ids, skip_special_tokens=True)


def test_ids_beyond_the_tokenizer_decode_as_unknown_for_either_kind(bpe, tmp_path):
    sp = tokenizer.default_tokenizer(str(tmp_path), 512)
    for tok in (bpe, sp):
        ids = tok.encode("The pass key is 42.")
        text = tok.decode([*ids[:3], tok.vocab_size, *ids[3:], 10**6])
        assert text.count(tokenizer.UNKNOWN) == 2, text
        assert text.replace(tokenizer.UNKNOWN, "").replace(" ", "") == tok.decode(ids).replace(
            " ", ""
        )
        assert tok.piece(tok.vocab_size + 5) == tokenizer.UNKNOWN
    warning = sp.unused_rows(640, 128, tied=False)
    assert "config.model.vocab_size=640 but tokenizer" in warning and "512 tokens: 128" in warning
    assert "(32,768 parameters)" in warning and "\n" not in warning
    assert sp.unused_rows(512, 128, tied=False) == ""


def test_save_pretrained_directory_names_its_special_tokens(bpe, tmp_path):
    hf = transformers.PreTrainedTokenizerFast(
        tokenizer_file=bpe.path, eos_token="<s>", bos_token="</s>", pad_token="<unk>"
    )
    hf.save_pretrained(tmp_path / "hf")  # tokenizer.json + tokenizer_config.json
    tok = tokenizer.load(str(tmp_path / "hf"))
    # The config's names win over the usual names (deliberately swapped here).
    assert (tok.eos_id, tok.bos_id, tok.pad_id) == (2, 3, 1)
    assert tok.encode(TEXTS[1]) == bpe.encode(TEXTS[1])


def test_bad_tokenizer_json_and_directories_are_one_line(bpe, tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(TokenizerError, match=r"bad.json is not a Hugging Face tokenizer.json"):
        tokenizer.load(str(tmp_path / "bad.json"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TokenizerError, match="holds neither tokenizer.json nor tokenizer.model"):
        tokenizer.load(str(tmp_path / "empty"))
    spec = json.loads(open(bpe.path).read())
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] != "</s>"]
    del spec["model"]["vocab"]["</s>"]
    (tmp_path / "noeos.json").write_text(json.dumps(spec))
    with pytest.raises(TokenizerError, match=r"no end-of-text token .*tokenizer_config.json"):
        tokenizer.load(str(tmp_path / "noeos.json"))
    n = bpe.vocab_size
    with pytest.raises(TokenizerError, match=rf"has {n} tokens but config.model.vocab_size=300"):
        bpe.check_fits(300)


def test_bpe_training_errors_are_one_line(tmp_path):
    (tmp_path / "a.txt").write_text("some text")
    base = ["train", "--kind=bpe", f"--input={tmp_path}/a.txt"]
    r = run_cli(
        "infini_jax.data.tokenizer", *base, "--vocab_size=100", f"--output={tmp_path}/t.json"
    )
    assert r.returncode == 2
    assert re.search(r"needs vocab_size >= 260 .* got 100", r.stderr.strip().splitlines()[-1])
    r = run_cli("infini_jax.data.tokenizer", *base, f"--output={tmp_path}/t.model")
    assert r.returncode == 2 and "a bpe tokenizer is written as .json" in r.stderr


@pytest.mark.slow
def test_tiny_default_trains_end_to_end_with_a_bpe_tokenizer(bpe, tmp_path):
    config = load_config(config_path("tiny.py"))
    config.evals.passkey.every_steps = 0  # config.evals: test_in_training_evals
    config.data.tokenizer = bpe.path
    config.data.seq_len, config.model.segment_len, config.data.batch_size = 128, 32, 8
    config.data.synthetic.min_length, config.data.synthetic.max_length = 128, 128
    config.total_steps, config.log_every_steps, config.checkpoint_every_steps = 8, 1, 8
    config.optimizer.warmup_steps, config.optimizer.learning_rate = 2, 1e-2
    config.report.passkey_samples = 1
    train.train(config, str(tmp_path))
    with open(tmp_path / "metrics.jsonl") as f:
        losses = [r["loss"] for r in map(json.loads, f) if "loss" in r]
    assert len(losses) == 8 and np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.5
    with open(tmp_path / "passkey.json") as f:  # the report decoded answers with this tokenizer
        samples = json.load(f)["samples"]
    assert samples and all(re.fullmatch(r"\d{2}", s["answer"]) for s in samples)

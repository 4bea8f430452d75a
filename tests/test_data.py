"""Data: tokenizer round trip, prepare → pipeline exactness, packing, resume, sharding."""

import dataclasses
import json
import re

import numpy as np
import pytest

from infini_jax.config import load_config
from infini_jax.data import pipeline, prepare, sources, synthetic, tokenizer
from infini_jax.data.config import DataConfig
from tests.conftest import config_path, run_cli


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tok") / "t.model")
    return tokenizer.train(tokenizer.synthetic_texts(seed=0, n=500), 384, path, progress=False)


def data_config(**over) -> DataConfig:
    d = load_config(config_path("tiny.py")).data
    # The data these tests were written for (the tiny default's recipe may change).
    d.packing, d.synthetic.key_digits = "concat", 5
    d.synthetic.passkey_weight = d.synthetic.kv_recall_weight = 0.5
    d.seq_len, d.validation_fraction = 32, 0.1
    d.synthetic.min_length, d.synthetic.max_length = 192, 256  # fits the small test tokenizer
    for k, v in over.items():
        d[k] = v
    return DataConfig.from_config(d)


def write_corpus(tmp_path, n_files=3, docs_per_file=12, seed=0):
    rng = np.random.default_rng(seed)
    words = ["alpha", "beta", "gamma", "delta", "pass", "key", "is", "green", "blue", "7", "42"]
    texts = []
    for f in range(n_files):
        docs = [" ".join(rng.choice(words, size=rng.integers(3, 40))) for _ in range(docs_per_file)]
        texts.extend(docs)
        with open(tmp_path / f"part{f}.jsonl", "w") as fh:
            fh.writelines(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(docs))
    return texts


def prepared(tmp_path, tok, **kw):
    texts = write_corpus(tmp_path, **kw)
    out = str(tmp_path / "shards")
    prepare.prepare(str(tmp_path / "part*.jsonl"), tok.path, out, workers=1, progress=False)
    docs = [np.asarray(tok.encode(t) + [tok.eos_id], np.int32) for t in texts]
    return out + "/*.array_record", docs


def all_batches(ds):
    return [{k: np.asarray(v) for k, v in b.items()} for b in ds]


def test_tokenizer_round_trip_and_special_ids(tok, tmp_path):
    text = "The pass key is 71432. Remember it. Ünïcode ok"
    assert tok.decode(tok.encode(text)) == text
    assert [tok.sp.id_to_piece(i) for i in tok.encode(" 71432")][1:] == list("71432")
    assert (tok.pad_id, tok.sp.unk_id(), tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    again = tokenizer.load(tok.path)
    assert again.encode(text) == tok.encode(text) and again.vocab_size == 384


def test_tokenizer_cli_trains_from_files(tmp_path):
    write_corpus(tmp_path)
    out = str(tmp_path / "cli.model")
    args = ["train", f"--input={tmp_path}/*.jsonl"]
    r = run_cli("infini_jax.data.tokenizer", *args, "--vocab_size=300", f"--output={out}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert tokenizer.load(out).vocab_size == 300
    r = run_cli("infini_jax.data.tokenizer", *args, "--vocab_size=100", f"--output={out}2")
    assert r.returncode == 2  # the error is the last line, after the progress bar
    last = r.stderr.strip().splitlines()[-1]
    assert re.search("could not train on .*Vocabulary size is smaller", last)


def test_tokenizer_larger_than_model_vocab_is_an_error(tok):
    with pytest.raises(
        tokenizer.TokenizerError, match=r"has 384 tokens but config.model.vocab_size=256"
    ):
        tok.check_fits(256)


def test_bad_tokenizer_file_is_an_error(tmp_path):
    (tmp_path / "bad.model").write_bytes(b"not a model")
    with pytest.raises(tokenizer.TokenizerError, match="bad.model is not a sentencepiece model"):
        tokenizer.load(str(tmp_path / "bad.model"))
    with pytest.raises(tokenizer.TokenizerError, match="nope.model does not exist"):
        tokenizer.load(str(tmp_path / "nope.model"))


def test_prepare_then_pipeline_yields_every_token_once_in_seeded_order(tok, tmp_path):
    pattern, docs = prepared(tmp_path, tok)
    d = data_config(source=pattern)

    def epoch(seed):
        ds = pipeline.make_dataset(d, tokenizer_path=tok.path, seed=seed, batch_size=1, epochs=1)
        batches = all_batches(ds)
        stream = np.concatenate([b["tokens"][b["mask"]] for b in batches])
        targets = np.concatenate([b["targets"][b["mask"]] for b in batches])
        return stream, targets

    train_docs = [doc for i, doc in enumerate(docs) if i % 10 != 0]  # every 10th is validation
    stream, targets = epoch(seed=1)
    # Each document contributes inputs doc[:-1] and targets doc[1:], in one seeded order.
    lengths = sorted(len(x) - 1 for x in train_docs)
    assert len(stream) == sum(lengths)
    order = []
    pos = 0
    remaining = list(range(len(train_docs)))
    while pos < len(stream):  # recover the order: the doc whose inputs start here
        match = [
            i
            for i in remaining
            if np.array_equal(stream[pos : pos + len(train_docs[i]) - 1], train_docs[i][:-1])
        ]
        assert match, f"tokens at {pos} are not the start of any unused document"
        i = match[0]
        np.testing.assert_array_equal(
            targets[pos : pos + len(train_docs[i]) - 1], train_docs[i][1:]
        )
        remaining.remove(i)
        order.append(i)
        pos += len(train_docs[i]) - 1
    assert not remaining  # none lost, none duplicated
    assert np.array_equal(epoch(seed=1)[0], stream)  # same seed, same order
    assert not np.array_equal(epoch(seed=2)[0], stream)  # another seed, another order
    assert order != sorted(order)

    val = all_batches(
        pipeline.make_dataset(d, tokenizer_path=tok.path, seed=1, batch_size=1, split="validation")
    )
    val_stream = np.concatenate([b["tokens"][b["mask"]] for b in val])
    val_docs = [doc for i, doc in enumerate(docs) if i % 10 == 0]
    assert np.array_equal(val_stream, np.concatenate([x[:-1] for x in val_docs]))


def test_packing_boundaries_masks_and_targets(tok, tmp_path):
    pattern, _ = prepared(tmp_path, tok)
    ds = pipeline.make_dataset(
        data_config(source=pattern), tokenizer_path=tok.path, seed=0, batch_size=4
    )
    b = next(iter(ds))
    assert {k: v.shape for k, v in b.items()} == {k: (4, 32) for k in b}
    ids, mask = b["segment_ids"], b["mask"]
    assert np.array_equal(mask, ids > 0)
    assert np.all(np.diff(ids, axis=1)[mask[:, 1:]] >= 0)  # ids rise along a row
    assert (ids.max(axis=1) > 1).any()  # several documents share a row
    assert np.all(b["tokens"][~mask] == 0) and np.all(b["targets"][~mask] == 0)
    same = (ids[:, 1:] == ids[:, :-1]) & mask[:, 1:]
    assert np.array_equal(b["targets"][:, :-1][same], b["tokens"][:, 1:][same])
    ends = mask[:, :-1] & (ids[:, 1:] != ids[:, :-1])  # last token of a document in the row
    assert np.all(b["targets"][:, :-1][ends & (ids[:, 1:] > 0)] == tok.eos_id)


def test_padding_mode_is_one_document_per_row(tok, tmp_path):
    pattern, docs = prepared(tmp_path, tok)
    ds = pipeline.make_dataset(
        data_config(source=pattern, packing="padding"),
        tokenizer_path=tok.path,
        seed=0,
        batch_size=2,
        epochs=1,
    )
    for b in all_batches(ds):
        assert set(np.unique(b["segment_ids"])) <= {0, 1}
        n = b["mask"].sum(axis=1)
        assert np.all(b["mask"][np.arange(32)[None] < n[:, None]])  # a prefix, then padding


def test_random_window_rows_are_windows_of_long_documents_drawn_anew_each_epoch(tok, tmp_path):
    pattern, docs = prepared(tmp_path, tok, n_files=1, docs_per_file=8)
    seq = 6

    def rows(mode, epochs=2):
        d = data_config(source=pattern, packing="padding", seq_len=seq, long_documents=mode)
        d = dataclasses.replace(d, validation_fraction=0.5)
        ds = pipeline.make_dataset(d, tokenizer_path=tok.path, seed=3, batch_size=1, epochs=epochs)
        out = []
        for b in all_batches(ds):
            n = int(b["mask"].sum())  # the row's tokens plus its last target
            out.append(np.concatenate([b["tokens"][0, :n], b["targets"][0, n - 1 : n]]))
        return out

    def offsets(row):  # every place the row occurs contiguously in a document
        return [
            s
            for d in docs
            for s in range(len(d) - len(row) + 1)
            if np.array_equal(d[s : s + len(row)], row)
        ]

    assert all(0 in offsets(r) for r in rows("truncate"))  # every row a document's start
    windows = rows("random_window")
    assert all(offsets(r) for r in windows)  # every row a contiguous window of a document
    assert any(0 not in offsets(r) for r in windows)  # and not only starts
    assert all(np.array_equal(a, b) for a, b in zip(windows, rows("random_window"), strict=True))
    half = len(windows) // 2  # the second epoch draws other windows of the same documents
    assert sorted(map(tuple, windows[:half])) != sorted(map(tuple, windows[half:]))


def test_iterator_resume_gives_identical_batches(tok, tmp_path):
    pattern, _ = prepared(tmp_path, tok)
    windows = {"packing": "padding", "long_documents": "random_window", "seq_len": 8}
    for over in ({"source": pattern}, {"source": "synthetic"}, {"source": pattern, **windows}):
        d = data_config(**{"seq_len": 64, **over})
        ds = pipeline.make_dataset(d, tokenizer_path=tok.path, seed=3, batch_size=2)
        it = iter(ds)
        for stop in (1, 7):
            for _ in range(stop):
                next(it)
            state = json.loads(json.dumps(pipeline.iterator_state(it, 0, 1)))  # survives JSON
            expected = [next(it) for _ in range(5)]
            fresh = pipeline.restore_iterator(iter(ds), state, 0, 1)
            for a, b in zip(expected, [next(fresh) for _ in range(5)], strict=True):
                for k in a:
                    np.testing.assert_array_equal(a[k], b[k])


def test_sharded_state_on_another_process_count_is_a_clear_error(tok):
    ds = pipeline.make_dataset(data_config(), tokenizer_path=tok.path, seed=0, batch_size=1)
    state = {"processes": [{}, {}], "host_sharding": "sharded", "process_count": 2}
    with pytest.raises(sources.DataError, match=r"saved by 2 processes .* \(this run: 4"):
        pipeline.restore_iterator(iter(ds), state, 0, 4, "sharded")
    with pytest.raises(sources.DataError, match="resume with 2 processes"):
        pipeline.restore_iterator(iter(ds), state, 0, 2, "replicated")
    one_stream = pipeline.iterator_state(iter(ds), 0, 1, "replicated")
    with pytest.raises(sources.DataError, match="one global stream but this run has 2"):
        pipeline.restore_iterator(iter(ds), one_stream, 0, 2, "sharded")
    pipeline.restore_iterator(iter(ds), one_stream, 0, 1, "sharded")  # 1 process: the same stream


def test_replicated_processes_get_their_rows_of_the_same_global_batch(tok):
    def batches(index, count):
        ds = pipeline.make_dataset(
            data_config(),
            tokenizer_path=tok.path,
            seed=5,
            batch_size=4 // count,
            process_index=index,
            process_count=count,
        )
        it = iter(ds)
        return [next(it) for _ in range(3)], pipeline.iterator_state(it, index, count)

    one, state_one = batches(0, 1)
    parts = [batches(i, 2) for i in range(2)]
    for step in range(3):
        for k in one[step]:
            joined = np.concatenate([parts[i][0][step][k] for i in range(2)])
            np.testing.assert_array_equal(joined, one[step][k])
    assert parts[0][1]["grain"] == parts[1][1]["grain"] == state_one["grain"]


def test_process_shards_are_disjoint_and_cover_the_data(tok, tmp_path):
    pattern, docs = prepared(tmp_path, tok)
    seen = []
    for i in range(3):
        ds = pipeline.make_dataset(
            data_config(source=pattern, packing="padding", seq_len=256, host_sharding="sharded"),
            tokenizer_path=tok.path,
            seed=0,
            batch_size=1,
            process_index=i,
            process_count=3,
            epochs=1,
        )
        seen.append({tuple(b["tokens"][0][b["mask"][0]]) for b in all_batches(ds)})
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    train = {tuple(x[:-1]) for i, x in enumerate(docs) if i % 10 != 0}
    assert seen[0] | seen[1] | seen[2] == train


def test_mixture_of_synthetic_and_prepared(tok, tmp_path):
    pattern, _ = prepared(tmp_path, tok)
    d = data_config(source=f"synthetic,{pattern}", weights="0.5,0.5", seq_len=256)
    b = next(iter(pipeline.make_dataset(d, tokenizer_path=tok.path, seed=0, batch_size=4)))
    text = " ".join(tok.decode(row[m]) for row, m in zip(b["tokens"], b["mask"], strict=True))
    assert "pass key" in text or "value of key" in text
    assert "alpha" in text or "gamma" in text


@pytest.mark.parametrize("task", synthetic.TASKS)
def test_synthetic_documents_are_exact_and_deterministic(tok, task):
    tasks = synthetic.SyntheticTasks(tok.encode)
    for depth in (0.0, 0.5, 1.0):
        doc = tasks.sample(np.random.default_rng(5), task, 300, depth=depth)
        assert len(doc.tokens) <= 300 and len(doc.tokens) > 200
        assert tok.decode(doc.tokens[doc.answer_start :]).strip() == doc.answer
        assert doc.answer in tok.decode(doc.tokens[doc.needle_start : doc.needle_start + 30])
        again = tasks.sample(np.random.default_rng(5), task, 300, depth=depth)
        assert np.array_equal(doc.tokens, again.tokens)
    shallow = tasks.sample(np.random.default_rng(6), task, 600, depth=0.0)
    deep = tasks.sample(np.random.default_rng(6), task, 600, depth=1.0)
    assert shallow.needle_start < deep.needle_start  # depth 0 is furthest from the question


def test_synthetic_length_shorter_than_the_fixed_parts_is_an_error(tok):
    tasks = synthetic.SyntheticTasks(tok.encode)
    with pytest.raises(ValueError, match="passkey document needs at least .* length=20 is too"):
        tasks.sample(np.random.default_rng(0), "passkey", 20)


def test_min_length_too_short_for_a_task_is_a_start_up_error(tok):
    d = data_config(seq_len=64)
    # documents need more than 64 tokens with this tokenizer
    d = dataclasses.replace(d, synthetic=dataclasses.replace(d.synthetic, min_length=64))
    with pytest.raises(
        sources.DataError,
        match=r"config.data.synthetic.min_length=64 is too "
        r"short: a (passkey|kv_recall) document needs at least \d+ tokens",
    ):
        pipeline.make_dataset(d, tokenizer_path=tok.path, seed=0, batch_size=1)


def test_a_task_of_weight_zero_is_not_length_checked(tok):
    tasks = synthetic.SyntheticTasks(tok.encode, 5)

    def shortest(task):  # the fewest tokens a document of `task` fits in
        for n in range(16, 2048):
            try:
                tasks.sample(np.random.default_rng(0), task, n)
                return n
            except ValueError:
                continue
        raise AssertionError(task)

    need = {t: shortest(t) for t in synthetic.TASKS}
    short, long = sorted(synthetic.TASKS, key=need.get)
    assert need[long] > need[short]
    d = data_config()
    syn = dict(min_length=need[short] + 1, max_length=need[long] + 64)  # + 1: the EOS
    only_short = {f"{short}_weight": 1.0, f"{long}_weight": 0.0}
    pipeline.check_synthetic_lengths(
        dataclasses.replace(d.synthetic, **syn, **only_short), tok.path
    )
    with pytest.raises(sources.DataError, match=f"a {long} document needs at least"):
        pipeline.check_synthetic_lengths(dataclasses.replace(d.synthetic, **syn), tok.path)

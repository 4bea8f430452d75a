"""The evaluation harness: a hand-built memory model retrieves through 16 segments, the
streaming engine runs in constant device memory, scoring equals greedy decoding, results are
reproducible, and the CLI writes its files."""

import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from infini_jax import model, sections
from infini_jax.config import load_config, save_config, validate
from infini_jax.data import pipeline, synthetic
from infini_jax.eval import tasks
from infini_jax.eval.engine import Engine
from infini_jax.evaluate import evaluate
from infini_jax.generate import generate
from infini_jax.training import checkpoint, optim
from infini_jax.training.step import init_state
from tests.conftest import ROOT, config_path, run_cli, small_model

# A word-level tokenizer for the template: one token per word, digit and punctuation mark.
WORDS = sorted(
    set(
        re.findall(
            r"[A-Za-z]+|[.?]",
            synthetic.PREAMBLE
            + synthetic.FILLER
            + synthetic.passkey_needle("1")
            + synthetic.PASSKEY_QUESTION,
        )
    )
)
DIGIT0 = 1  # ids 1..10 are the digits; 0 is unused
VOCAB = {**{str(d): DIGIT0 + d for d in range(10)}, **{w: 11 + i for i, w in enumerate(WORDS)}}
INVERSE = {i: w for w, i in VOCAB.items()}


def encode(text: str) -> list[int]:
    return [VOCAB[w] for w in re.findall(r"\d|[A-Za-z]+|[.?]", text)]


def decode(ids) -> str:
    return " ".join(INVERSE.get(int(i), "?") for i in ids)


def copy_model(attention: str):
    """One layer whose memory path copies the digit it holds (weights set by hand).

    Keys: +20 on every feature for digits, −28 for other tokens, so σ(k) keeps only digits;
    values: the digit's one-hot; queries 0 (σ(q) = 1 reads the whole memory). The output maps
    the one-hot to that digit's logit. Local attention (q = 0: a uniform average of the values
    so far) also carries a digit of the current segment.
    """
    cfg = small_model(  # vocab 64, d_model 32, b = 0 as small_model's
        num_layers=1, num_heads=1, num_kv_heads=1, mlp_dim=8, segment_len=16, attention=attention
    )
    p = jax.tree.map(np.zeros_like, model.init_params(cfg, jax.random.key(0)))
    p = jax.tree.map(np.array, p)
    emb = p["embed"]["embedding"]
    for d in range(10):
        emb[DIGIT0 + d, 0] = 1.0  # digit flag
        emb[DIGIT0 + d, 1 + d] = 1.0  # which digit
    emb[11:, 12] = 1.0  # not a digit
    att = p["layers"]["attention"]
    att["key"]["kernel"][0, 0, 0, :] = 5.0
    att["key"]["kernel"][0, 12, 0, :] = -5.0
    for d in range(10):
        att["value"]["kernel"][0, 1 + d, 0, d] = 1.0
        att["out"]["kernel"][0, 0, d, 20 + d] = 10.0
        p["unembed"]["kernel"][20 + d, DIGIT0 + d] = 1.0
    for norm in ("attention_norm", "mlp_norm"):
        p["layers"][norm]["scale"][:] = 1.0
    p["final_norm"]["scale"][:] = 1.0
    return cfg, jax.tree.map(np.asarray, p)


def _passkey(seed=0, lengths=(256,), samples=2, key_digits=1, encoder=encode):
    depths = tuple(range(0, 101, 10))
    return tasks.passkey_samples(encoder, tasks.Grid(lengths, depths, samples, seed), key_digits)


@pytest.mark.slow
def test_hand_built_memory_model_retrieves_across_16_segments_and_local_does_not():
    samples = _passkey()  # 256 word tokens = 16 segments of 16
    assert max(len(s.tokens) for s in samples) > 15 * 16
    infini_cfg, params = copy_model("infini")
    records = tasks.score_retrieval(Engine(infini_cfg, params), samples, decode, batch_size=8)
    summary = tasks.summarize_retrieval(records)
    assert summary["overall"]["accuracy"] == 1.0
    assert max(r["segments_back"] for r in records) >= 14
    local_cfg, local_params = copy_model("local")
    local = tasks.score_retrieval(Engine(local_cfg, local_params), samples, decode, batch_size=8)
    for r in local:  # right only when the needle shares the question's segment
        assert r["correct"] == (r["segments_back"] == 0), r
    assert tasks.summarize_retrieval(local)["beyond_first_segment"]["accuracy"] == 0.0
    ablated = Engine(infini_cfg, params, reset_memory=True)
    assert tasks.score_retrieval(ablated, samples, decode, batch_size=8) == local


@pytest.mark.slow
def test_teacher_forced_scoring_equals_greedy_decoding():
    cfg = small_model(init_std=0.3, vocab_size=512, segment_len=16)
    params = model.init_params(cfg, jax.random.key(1))
    tok = pipeline.resolve_tokenizer(load_config(config_path("tiny.py")).data, "/tmp", 512, 0)
    samples = _passkey(lengths=(96,), samples=1, key_digits=3, encoder=tok.encode)[:4]
    records = tasks.score_retrieval(Engine(cfg, params), samples, tok.decode, batch_size=4)
    for s, r in zip(samples, records, strict=True):
        answer = s.tokens[s.answer_start :]
        greedy = generate(cfg, params, s.tokens[None, : s.answer_start], max_new_tokens=len(answer))
        assert r["correct"] == bool(np.array_equal(greedy[0], answer))
        assert r["prediction"].split()[0][:1] == tok.decode(greedy[0][:1].tolist()).strip()[:1]
    hand_cfg, hand = copy_model("infini")
    for s in _passkey()[::5]:
        greedy = generate(hand_cfg, hand, s.tokens[None, : s.answer_start], max_new_tokens=1)
        assert decode(greedy[0]) == s.answer


def test_samples_are_reproducible_from_the_seed():
    a, b, c = _passkey(seed=3), _passkey(seed=3), _passkey(seed=4)
    assert all(np.array_equal(x.tokens, y.tokens) for x, y in zip(a, b, strict=True))
    assert [x.answer for x in a] != [x.answer for x in c]
    for s in a:  # the needle really sits at its depth, the answer at the end
        assert decode(s.tokens[s.answer_start :]) == s.answer
        assert decode(s.tokens[s.needle_start : s.needle_start + 4]) == "The pass key is"
    hay = np.arange(50, 60, dtype=np.int32)

    def niah():
        return tasks.niah_samples(encode_niah, tasks.Grid((200,), (0, 50, 100), 2, 0), 4, hay)

    n1, n2 = niah(), niah()
    assert all(np.array_equal(x.tokens, y.tokens) for x, y in zip(n1, n2, strict=True))
    for s in n1:
        assert len(s.tokens) == 200
        assert s.tokens[s.answer_start :].tolist() == encode_niah(" " + s.answer)


def encode_niah(text: str) -> list[int]:
    return [ord(ch) % 50 for ch in text]


def test_streaming_compiles_once_and_feeds_fixed_size_chunks():
    cfg, params = copy_model("infini")
    engine = Engine(cfg, params, chunk_segments=4)
    shapes = []
    inner = engine._chunk
    compiled = inner._cache_size()  # shared by engines of this config (other tests' shapes too)

    def spy(params, memory, *arrays):
        shapes.append({a.shape for a in arrays} | {x.shape for x in jax.tree.leaves(memory)})
        return inner(params, memory, *arrays)

    engine._chunk = spy
    for length in (100, 3000):
        samples = [np.full((length,), 12, np.int32), np.full((length // 2,), 12, np.int32)]
        out = engine.run(samples, [np.asarray([length - 2]), np.asarray([0, 5])])
        assert [len(x) for x in out.logprob] == [1, 2]
        assert out.segment_nll.shape == (2, -(-length // 16))
    assert len({frozenset(s) for s in shapes}) == 1  # same shapes at 100 and 3,000 tokens
    assert inner._cache_size() - compiled <= 1  # one compile serves both lengths
    assert len(shapes) == 2 + 3000 // 64 + 1


def test_engine_matches_the_model_loss():
    cfg = small_model(segment_len=8)
    params = model.init_params(cfg, jax.random.key(0))
    tokens = np.asarray(jax.random.randint(jax.random.key(1), (2, 41), 0, cfg.vocab_size))
    out = Engine(cfg, params, chunk_segments=2).run(list(tokens), [np.arange(40)] * 2)
    nll, count, _ = model.sequence_loss(cfg, params, tokens[:, :-1], tokens[:, 1:])
    np.testing.assert_allclose(out.segment_nll.sum(), float(nll.sum()), rtol=1e-5)
    assert out.segment_count.sum() == float(count.sum()) == 80
    np.testing.assert_allclose(-sum(x.sum() for x in out.logprob), float(nll.sum()), rtol=1e-5)


@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory):
    """A freshly initialised tiny checkpoint in a workdir, as training leaves it."""
    workdir = str(tmp_path_factory.mktemp("run"))
    config = load_config(config_path("tiny.py"))
    config.evals.passkey.every_steps = 0  # config.evals: test_in_training_evals
    config.model.d_model = 64
    config.model.mlp_dim = 128
    cfg = validate(config)
    pipeline.resolve_tokenizer(config.data, workdir, cfg.vocab_size, config.seed)
    tx, _ = optim.make_optimizer(
        sections.OptimizerConfig.from_config(config.optimizer), config.total_steps
    )
    mngr = checkpoint.manager(workdir, config)
    checkpoint.save(mngr, 7, init_state(cfg, tx, 0), {}, config)
    mngr.wait_until_finished()
    mngr.close()
    save_config(config, workdir)
    return workdir


def _eval_config(task, **overrides):
    c = load_config(config_path(f"eval/{task}.py") + ":quick")
    c.lengths, c.samples_per_cell = (256, 640), 2
    for k, v in overrides.items():
        c[k] = v
    return c


@pytest.mark.slow
def test_evaluate_passkey_writes_results_summary_plots_and_report(saved_checkpoint, tmp_path):
    out = str(tmp_path / "eval")
    summary = evaluate(_eval_config("passkey"), saved_checkpoint + "/7", out)
    rows = [json.loads(x) for x in open(os.path.join(out, "results.jsonl"))]
    assert len(rows) == 2 * 5 * 2 == summary["overall"]["n"]
    fields = {
        "task",
        "length",
        "depth",
        "seed",
        "needle_segment",
        "segments_back",
        "answer",
        "prediction",
        "correct",
        "answer_logprob",
        "digit_accuracy",
    }
    assert fields <= set(rows[0])
    assert set(summary["by_length"]) == {"256", "640"}
    assert sum(s["n"] for s in summary["by_segments_back"].values()) == 20
    for name in (
        "summary.json",
        "heatmap.png",
        "accuracy_by_length.png",
        "accuracy_by_segments_back.png",
        "report.md",
    ):
        assert os.path.getsize(os.path.join(out, name)) > 0
    again = evaluate(_eval_config("passkey"), saved_checkpoint, str(tmp_path / "again"))
    assert again["by_depth_length"] == summary["by_depth_length"]
    assert (
        open(os.path.join(out, "results.jsonl")).read()
        == open(tmp_path / "again" / "results.jsonl").read()
    )


@pytest.mark.slow
def test_evaluate_ppl_and_memory_stats(saved_checkpoint, tmp_path):
    ppl = evaluate(
        _eval_config("ppl_by_position", lengths=(256,)), saved_checkpoint, str(tmp_path / "p")
    )
    s = ppl["by_length"]["256"]
    assert len(s["nll_memory_by_segment"]) == len(s["nll_no_memory_by_segment"]) == 4
    assert s["nll_memory_by_segment"][0] == pytest.approx(s["nll_no_memory_by_segment"][0], 1e-5)
    assert s["nll_memory_by_segment"][-1] != s["nll_no_memory_by_segment"][-1]
    mem = evaluate(
        _eval_config("memory_stats", lengths=(256,)), saved_checkpoint, str(tmp_path / "m")
    )
    assert mem["gate_mean_by_layer"] == pytest.approx([0.5, 0.5])  # b = 0 at init
    assert mem["heads_mixed"] == 1.0
    norms = np.asarray(mem["by_length"]["256"]["memory_norm"])
    assert norms.shape == (4, 2) and np.all(np.diff(norms[:, 0]) != 0)
    assert os.path.getsize(tmp_path / "m" / "gates.png") > 0


@pytest.mark.slow
def test_cli_errors_are_one_line(saved_checkpoint, tmp_path):
    def run(*args):
        return run_cli("infini_jax.evaluate", *args)

    r = run(
        "--config=configs/eval/passkey.py", f"--checkpoint={tmp_path}/none", f"--output={tmp_path}"
    )
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith(
        "error: no checkpoints"
    )
    r = run(
        "--config=configs/eval/passkey.py",
        f"--checkpoint={saved_checkpoint}",
        f"--output={tmp_path}",
        "--config.lengths=(16,)",
    )
    assert r.returncode == 2 and "config.lengths" in r.stderr.strip().splitlines()[-1]
    r = run(
        "--config=configs/eval/passkey.py",
        f"--checkpoint={saved_checkpoint}",
        f"--output={tmp_path}",
        "--config.depths=(0,150)",
    )
    assert "config.depths" in r.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_two_processes_give_the_same_results_as_one(saved_checkpoint, tmp_path):
    """2 processes × 2 fake devices each (gloo collectives on 127.0.0.1) vs 1 device."""
    one = str(tmp_path / "one")
    evaluate(_eval_config("passkey", lengths=(256,)), saved_checkpoint, one)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "infini_jax.evaluate",
                "--config=configs/eval/passkey.py:quick",
                "--config.lengths=(256,)",
                "--config.samples_per_cell=2",
                f"--checkpoint={saved_checkpoint}",
                f"--output={tmp_path}/two",
                "--coordinator_address=127.0.0.1:12391",
                "--num_processes=2",
                f"--process_id={i}",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    a = [json.loads(x) for x in open(os.path.join(one, "results.jsonl"))]
    b = [json.loads(x) for x in open(tmp_path / "two" / "results.jsonl")]
    assert [r["prediction"] for r in a] == [r["prediction"] for r in b] and len(a) == 10
    np.testing.assert_allclose(
        [r["answer_logprob"] for r in a], [r["answer_logprob"] for r in b], rtol=1e-5
    )

"""lm-evaluation-harness on our checkpoints: a small local task (JSON data + YAML, no Hub), the
per-request log-likelihoods against the model's whole-sequence logits, accuracy by hand."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from lm_eval import evaluator
from lm_eval.tasks import TaskManager

from infini_jax import convert, model
from infini_jax.config import validate
from infini_jax.errors import Error
from infini_jax.generate import generate
from infini_jax.lm_eval import InfiniLM, task_names
from infini_jax.training import loading
from tests.conftest import run_cli
from tests.test_convert import CASES, hf_llama

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. "
DOCS = [
    dict(
        context=FILLER * (1 + i % 2) + f"Question {i}: the colour of the sky is",
        choices=[" blue", " green", " red"],
        gold=i % 3,
    )
    for i in range(4)
]
MC_TASK = """task: local_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{gold}}}}"
metric_list:
  - metric: acc
"""
GEN_TASK = """task: local_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{context}}}}"
doc_to_target: "{{{{choices[gold]}}}}"
generation_kwargs:
  until: ["."]
  max_gen_toks: 6
metric_list:
  - metric: exact_match
"""
ROLL_TASK = """task: local_roll
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{context}}}}"
metric_list:
  - metric: word_perplexity
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """An Infini model (segments of 8 tokens, so every context spans many) and the tasks."""
    from infini_jax.data import tokenizer

    tmp = tmp_path_factory.mktemp("lmeval")
    bpe = tokenizer.train(
        tokenizer.synthetic_texts(0, 400), 512, str(tmp / "t.json"), False, kind="bpe"
    )
    hf_llama(tmp / "hf", tok=bpe, **CASES["gqa_untied"])
    convert.from_hf(str(tmp / "hf"), str(tmp / "w"), "infini", 8, 64, balance_init=0.0)
    data = tmp / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    tasks = tmp / "tasks"
    tasks.mkdir()
    for name, text in (("mc", MC_TASK), ("gen", GEN_TASK), ("roll", ROLL_TASK)):
        (tasks / f"{name}.yaml").write_text(text.format(data=data))
    return tmp, bpe


def reference_logprob(cfg, params, ctx: list[int], cont: list[int]) -> float:
    """log p(cont | ctx) from the model's whole-sequence logits (no streaming engine)."""
    n = len(ctx + cont)
    tokens = np.zeros((1, 256), np.int32)  # one padded shape: one compile
    tokens[0, :n] = ctx + cont
    logp = jax.nn.log_softmax(_logits(cfg, params, jnp.asarray(tokens))[0, : n - 1], -1)
    return float(sum(logp[len(ctx) - 1 + j, t] for j, t in enumerate(cont)))


@functools.partial(jax.jit, static_argnums=0)
def _logits(cfg, params, tokens):
    return model.sequence_logits(cfg, params, tokens)[0]


@pytest.mark.slow
def test_multiple_choice_log_likelihoods_and_accuracy(setup, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    tmp, bpe = setup
    lm = InfiniLM(str(tmp / "w"), batch_size=4)
    out = evaluator.simple_evaluate(
        model=lm,
        tasks=["local_mc", "local_gen", "local_roll"],
        task_manager=TaskManager(include_path=str(tmp / "tasks")),
        log_samples=True,
    )
    config, _, params = loading.load_params(str(tmp / "w"))
    cfg = validate(config)
    correct = []
    for sample in out["samples"]["local_mc"]:
        doc = sample["doc"]
        ours = [float(r[0]) for r in sample["filtered_resps"]]
        expected = []
        for arguments in sample["arguments"]:  # (context, continuation) as lm-eval asked
            context, continuation = arguments[0], arguments[1]
            whole = bpe.encode(context + continuation)  # lm-eval's causal-LM split
            ctx = bpe.encode(context)
            assert len(ctx) > 3 * cfg.segment_len  # the context crosses memory segments
            expected.append(reference_logprob(cfg, params, ctx, whole[len(ctx) :]))
        np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)
        correct.append(int(np.argmax(expected)) == doc["gold"])
    assert out["results"]["local_mc"]["acc,none"] == pytest.approx(np.mean(correct))
    # Rolling: every token of the document after the EOS prefix.
    for sample in out["samples"]["local_roll"]:
        ids = bpe.encode(sample["doc"]["context"])
        expected = reference_logprob(cfg, params, [bpe.eos_id], ids)
        assert float(sample["filtered_resps"][0]) == pytest.approx(expected, rel=1e-4, abs=1e-4)
    # Generation: greedy, 6 new tokens at most, cut at the stop string ".".
    for sample in out["samples"]["local_gen"]:
        ids = generate(
            cfg, params, np.asarray([bpe.encode(sample["arguments"][0][0])]), max_new_tokens=6
        )
        new = list(ids[0])
        new = new[: new.index(bpe.eos_id)] if bpe.eos_id in new else new  # EOS stops too
        expected = bpe.decode(new).split(".")[0]
        assert sample["filtered_resps"][0] == expected


@pytest.mark.slow  # the CLI end to end (lm-eval loads its task registry)
def test_cli_runs_a_local_task_and_names_unknown_tasks(setup, tmp_path):
    tmp, _ = setup
    args = [f"--checkpoint={tmp}/w", f"--include_path={tmp}/tasks", "--limit=2"]
    r = run_cli("infini_jax.lm_eval", *args, "--tasks=local_mc", f"--output={tmp_path}/r.json")
    assert r.returncode == 0, r.stderr[-2000:]
    results = json.loads((tmp_path / "r.json").read_text())
    assert "local_mc" in r.stdout and "acc,none" in results["local_mc"]
    manager = TaskManager(include_path=str(tmp / "tasks"))
    assert task_names(" local_mc,local_roll ", manager) == ["local_mc", "local_roll"]
    with pytest.raises(Error, match=r"unknown lm-eval task\(s\) \['no_such_task'\]"):
        task_names("local_mc,no_such_task", manager)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A one-step run of the tiny default (its sentencepiece tokenizer), smaller still."""
    from infini_jax import train
    from infini_jax.config import load_config, override
    from tests.conftest import config_path

    workdir = str(tmp_path_factory.mktemp("tiny") / "w")
    fields = {"model.d_model": 32, "model.mlp_dim": 64, "data.batch_size": 2, "total_steps": 1}
    fields |= {"report.passkey_multiples": (), "evals.passkey.every_steps": 0}
    train.train(override(load_config(config_path("tiny.py")), fields), workdir)
    return workdir


@pytest.mark.slow
def test_ruler_runs_offline_and_its_responses_are_greedy_generation(tiny_run, tmp_path):
    """niah_single_1 and ruler_vt build their data offline, sized with the workdir's
    hf_tokenizer/ (which AutoTokenizer loads, encoding as ours does); each response equals
    `generate`'s greedy continuation of the request's prompt."""
    from transformers import AutoTokenizer

    config, _, params = loading.load_params(tiny_run)
    cfg = validate(config)
    tok = loading.load_tokenizer(tiny_run, config)
    hf = AutoTokenizer.from_pretrained(f"{tiny_run}/{loading.HF_TOKENIZER}")
    text = FILLER.strip()  # (a trailing space is a piece of its own in HF's Llama tokenizer)
    assert hf(text, add_special_tokens=False).input_ids == tok.encode(text)
    args = [f"--checkpoint={tiny_run}", "--tasks=niah_single_1,ruler_vt", "--limit=1"]
    args += ['--metadata={"max_seq_lengths": [1024]}', f"--samples={tmp_path}/s.json"]
    r = run_cli("infini_jax.lm_eval", *args, f"--output={tmp_path}/r.json", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads((tmp_path / "r.json").read_text())
    assert set(results) == {"niah_single_1", "ruler_vt"}
    assert all(0 <= results[t]["1024,none"] <= 1 for t in results)
    samples = json.loads((tmp_path / "s.json").read_text())
    for task in ("niah_single_1", "ruler_vt"):
        (sample,) = samples[task]
        context, gen_kwargs = sample["arguments"][0]
        prompt = np.asarray([tok.encode(context)])
        ids = generate(cfg, params, prompt, max_new_tokens=gen_kwargs["max_gen_toks"])[0].tolist()
        ids = ids[: ids.index(tok.eos_id)] if tok.eos_id in ids else ids
        text = tok.decode(ids)
        for stop in gen_kwargs.get("until") or []:
            text = text.split(stop)[0]
        assert sample["resps"] == [[text]], task


def test_failures_inside_lm_eval_are_one_line_and_ours_keep_their_traceback():
    from infini_jax.lm_eval import library_failures

    def raise_in(filename: str, error: str):
        exec(compile(f"raise {error}", filename, "exec"))  # a frame "inside" that file

    site = "/venv/lib/python3.11/site-packages/lm_eval/tasks/ruler/common_utils.py"
    with pytest.raises(
        Error,
        match=r"ZeroDivisionError: .* \(at lm_eval/tasks/ruler/common_"
        r"utils.py:1\); a metric had no sample to average",
    ):
        with library_failures(["ruler_cwe"]):
            raise_in(site, "ZeroDivisionError('division by zero')")
    with pytest.raises(Error, match=r"need data from the Hugging Face Hub"):
        with library_failures(["hellaswag"]):
            raise_in(site, "ConnectionError(\"Couldn't reach 'x' on the Hub\")")
    with pytest.raises(KeyError):  # a failure in our own code is not hidden
        with library_failures(["x"]):
            raise_in("/work/infini_jax/lm_eval.py", "KeyError('ours')")

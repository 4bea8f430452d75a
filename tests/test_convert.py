"""Hugging Face Llama checkpoints in and out, against `transformers`' own `LlamaForCausalLM`
(random tiny models built and saved here): logits, greedy generation, bit-exact round trips,
and one-line refusals."""

import dataclasses
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file

from infini_jax import convert, model, train
from infini_jax.config import load_config, validate
from infini_jax.data import tokenizer
from infini_jax.errors import ConvertError
from infini_jax.generate import generate
from infini_jax.training import loading
from tests.conftest import config_path, run_cli

SEQ = 24
CASES = {
    # GQA, untied, default RoPE, head_dim = hidden / heads.
    "gqa_untied": dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False),
    # Tied, Llama 3.1 RoPE scaling (every band used at head_dim 16), an explicit head_dim that
    # is not hidden / heads (32 / 4 = 8).
    "tied_llama3_head_dim": dict(
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        tie_word_embeddings=True,
        rope_theta=500000.0,
        rope_scaling=dict(
            rope_type="llama3",
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=64,
        ),
    ),
}


def hf_llama(
    directory, dtype=torch.float32, tok=None, **overrides
) -> transformers.LlamaForCausalLM:
    """A random tiny Llama, saved to `directory` in `dtype` (norms randomised too, so every
    weight's place is tested), with `tok`'s tokenizer beside it."""
    kw = dict(
        vocab_size=512,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        rms_norm_eps=1e-5,
        initializer_range=0.2,
        max_position_embeddings=256,
        attn_implementation="eager",
    )
    kw.update(overrides)
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**kw)).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith("norm.weight"):
                p.normal_(1.0, 0.2)
    hf.to(dtype).save_pretrained(directory)
    if tok is not None:
        transformers.PreTrainedTokenizerFast(
            tokenizer_file=tok.path, eos_token="</s>"
        ).save_pretrained(directory)
    return hf


def hf_logits(directory, tokens) -> np.ndarray:
    hf = transformers.LlamaForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    with torch.no_grad():
        return hf(torch.as_tensor(np.asarray(tokens), dtype=torch.long)).logits.numpy()


def our_logits(workdir, tokens) -> np.ndarray:
    config, _, params = loading.load_params(str(workdir))
    logits, _ = model.sequence_logits(validate(config), params, jnp.asarray(tokens))
    return np.asarray(logits)


def relative_error(a, b) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("tok") / "tokenizer.json")
    return tokenizer.train(tokenizer.synthetic_texts(0, 400), 512, out, False, kind="bpe")


TOKENS = np.random.default_rng(0).integers(0, 512, (2, SEQ))


@pytest.mark.parametrize("case", sorted(CASES))
def test_import_equals_transformers_and_export_round_trips_bit_exactly(case, bpe, tmp_path):
    hf_llama(tmp_path / "hf", tok=bpe, **CASES[case])
    expected = hf_logits(tmp_path / "hf", TOKENS)
    convert.from_hf(str(tmp_path / "hf"), str(tmp_path / "full"), "full", SEQ)
    assert relative_error(our_logits(tmp_path / "full", TOKENS), expected) < 1e-4
    # Local attention with one segment is the same computation.
    convert.from_hf(str(tmp_path / "hf"), str(tmp_path / "local"), "local", SEQ)
    assert relative_error(our_logits(tmp_path / "local", TOKENS), expected) < 1e-4
    # The tokenizer came along and is the same one.
    tok = tokenizer.load(
        json.loads((tmp_path / "full" / "config.json").read_text())["data"]["tokenizer"]
    )
    assert tok.encode("The pass key is 12345.") == bpe.encode("The pass key is 12345.")

    assert convert.to_hf(str(tmp_path / "full"), str(tmp_path / "out")) == ""
    np.testing.assert_allclose(hf_logits(tmp_path / "out", TOKENS), expected, rtol=0, atol=0)
    before, after = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("hf", "out"))
    assert sorted(before) == sorted(after)
    for name, value in before.items():
        assert after[name].dtype == value.dtype and np.array_equal(after[name], value), name
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    text = "What is the value of key 4821?"
    assert auto(text, add_special_tokens=False)["input_ids"] == bpe.encode(text)
    assert auto.eos_token_id == bpe.eos_id


def test_bfloat16_checkpoint_imports_exactly_and_exports_bitwise(tmp_path):
    hf_llama(tmp_path / "hf", dtype=torch.bfloat16, **CASES["gqa_untied"])
    convert.from_hf(str(tmp_path / "hf"), str(tmp_path / "w"), "full", SEQ)
    # Stored as bf16 (lossless, half the memory); every restore is float32, as training wants.
    _, _, params = loading.load_params(str(tmp_path / "w"))
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype("float32")}
    # transformers upcasts the bf16 weights to float32, as the import does.
    assert (
        relative_error(our_logits(tmp_path / "w", TOKENS), hf_logits(tmp_path / "hf", TOKENS))
        < 1e-4
    )
    convert.to_hf(str(tmp_path / "w"), str(tmp_path / "out"), "bfloat16")
    import safetensors.torch

    before, after = (
        safetensors.torch.load_file(str(tmp_path / d / "model.safetensors")) for d in ("hf", "out")
    )
    assert sorted(before) == sorted(after)
    for name, value in before.items():
        assert after[name].dtype == torch.bfloat16 and torch.equal(after[name], value), name
    # No tokenizer came with it: the export carries the built-in sentencepiece one, readable
    # by AutoTokenizer (LlamaTokenizer) with the same ids.
    sp = tokenizer.load(str(tmp_path / "w" / "tokenizer_synthetic_512.model"))
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    text = "The pass key is 71432. Remember it."
    assert auto(text, add_special_tokens=False)["input_ids"] == sp.encode(text)
    assert (auto.eos_token_id, auto.bos_token_id) == (sp.eos_id, sp.bos_id)


def test_sharded_checkpoint_imports(tmp_path):
    hf = hf_llama(tmp_path / "one", **CASES["gqa_untied"])
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    convert.from_hf(str(tmp_path / "sharded"), str(tmp_path / "w"), "full", SEQ)
    expected = hf_logits(tmp_path / "one", TOKENS)
    assert relative_error(our_logits(tmp_path / "w", TOKENS), expected) < 1e-4


def test_greedy_generation_equals_transformers(tmp_path):
    hf = hf_llama(tmp_path / "hf", **CASES["gqa_untied"])
    convert.from_hf(str(tmp_path / "hf"), str(tmp_path / "w"), "full", 64)
    config, _, params = loading.load_params(str(tmp_path / "w"))
    prompt = TOKENS[:, :8]
    ours = generate(validate(config), params, prompt, max_new_tokens=32)
    with torch.no_grad():
        theirs = hf.generate(
            torch.as_tensor(prompt),
            attention_mask=torch.ones(prompt.shape, dtype=torch.long),
            max_new_tokens=32,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )
    np.testing.assert_array_equal(ours, theirs[:, 8:].numpy())


@pytest.mark.slow
def test_generate_cli_starts_imported_prompts_with_bos(bpe, tmp_path):
    hf_llama(tmp_path / "hf", tok=bpe, **CASES["gqa_untied"])
    convert.from_hf(str(tmp_path / "hf"), str(tmp_path / "w"), "full", 64)
    config, _, params = loading.load_params(str(tmp_path / "w"))
    prompt = "The pass key is"
    ids = [bpe.bos_id, *bpe.encode(prompt)]
    new = generate(validate(config), params, np.asarray([ids]), max_new_tokens=6)[0]
    args = [f"--checkpoint={tmp_path}/w", f"--prompt={prompt}", "--max_new_tokens=6"]
    r = run_cli("infini_jax.generate", *args, "--add_bos")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.rstrip("\n") == bpe.decode(new)


@pytest.mark.slow
def test_infini_import_adds_balance_factors_and_refuses_export(tmp_path):
    hf_llama(tmp_path / "hf", **CASES["gqa_untied"])
    convert.from_hf(str(tmp_path / "hf"), str(tmp_path / "w"), "infini", 8, 32, balance_init=-2.0)
    config, _, params = loading.load_params(str(tmp_path / "w"))
    assert config.model.attention == "infini" and config.data.seq_len == 32
    np.testing.assert_array_equal(params["layers"]["attention"]["balance"], np.full((2, 4), -2.0))
    with pytest.raises(ConvertError, match=r"already holds checkpoints; choose a new directory"):
        convert.from_hf(str(tmp_path / "hf"), str(tmp_path / "w"))  # never over a workdir
    # The cold start of configs/continual_infini.py: b = -3 needs the sigmoid gate.
    cold = ["from_hf", f"--hf={tmp_path}/hf", "--attention=infini", "--segment_len=8"]
    r = run_cli("infini_jax.convert", *cold, "--balance_init=-3", f"--output={tmp_path}/c")
    assert r.returncode == 2 and "balance_init=-3.0 is where the hard-sigmoid" in r.stderr
    r = run_cli(
        "infini_jax.convert", *cold, "--balance_init=-3", "--gate=sigmoid", f"--output={tmp_path}/c"
    )
    assert r.returncode == 0, r.stderr[-2000:]
    config, _, params = loading.load_params(str(tmp_path / "c"))
    assert config.model.gate == "sigmoid"
    np.testing.assert_array_equal(params["layers"]["attention"]["balance"], np.full((2, 4), -3.0))
    r = run_cli(
        "infini_jax.convert", "to_hf", f"--checkpoint={tmp_path}/w", f"--output={tmp_path}/o"
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert (
        "Infini-attention checkpoint (delta update, elu features): Hugging Face's Llama has "
        "no compressive memory" in r.stderr
    )
    assert not (tmp_path / "o").exists()
    convert.from_hf(str(tmp_path / "hf"), str(tmp_path / "loc"), "local", 8)
    assert "Hugging Face will run it as full attention" in convert.to_hf(
        str(tmp_path / "loc"), str(tmp_path / "o2")
    )


def _edit_config(directory, **changes):
    path = directory / "config.json"
    hf = json.loads(path.read_text())
    hf.update(changes)
    path.write_text(json.dumps(hf))


@pytest.mark.parametrize(
    "change, message",
    [
        (
            dict(rope_parameters=dict(rope_type="yarn", rope_theta=1e4, factor=4.0)),
            "rope_type='yarn' is not supported",
        ),
        (dict(model_type="mistral"), "model_type='mistral'; only Llama checkpoints"),
        (
            dict(attention_bias=True),
            "attention_bias=True; infini_jax's Llama has attention_bias=False",
        ),
        (dict(num_hidden_layers=3), r"tensors missing: model.layers.2.input_layernorm.weight"),
        (
            dict(intermediate_size=40),
            r"mlp.down_proj.weight has shape \(32, 48\), which does not fit",
        ),
    ],
)
def test_what_would_import_wrongly_is_refused_in_one_line(change, message, tmp_path):
    hf_llama(tmp_path / "hf", **CASES["gqa_untied"])
    _edit_config(tmp_path / "hf", **change)
    with pytest.raises(ConvertError, match=message):
        convert.from_hf(str(tmp_path / "hf"), str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()  # nothing written


def test_convert_cli_bad_input_is_one_line(tmp_path):
    hf_llama(tmp_path / "hf", **CASES["gqa_untied"])
    os.remove(tmp_path / "hf" / "model.safetensors")
    r = run_cli("infini_jax.convert", "from_hf", f"--hf={tmp_path}/hf", f"--output={tmp_path}/w")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert re.search(r"holds neither model.safetensors nor model.safetensors.index.json", r.stderr)
    r = run_cli("infini_jax.convert", "from_hf", f"--hf={tmp_path}/none", f"--output={tmp_path}/w")
    assert r.returncode == 2 and "config.json does not exist" in r.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_continual_pretraining_of_an_imported_llama_into_infini(bpe, tmp_path, capsys):
    hf_llama(tmp_path / "hf", tok=bpe, **CASES["gqa_untied"])
    imported = str(tmp_path / "imported")
    convert.from_hf(str(tmp_path / "hf"), imported, "full", 128)
    config = load_config(config_path("continual_infini.py") + ":cpu")
    config.init_from = imported
    config.total_steps = config.checkpoint_every_steps = 24  # the preset's 40, shortened
    last = train.train(config, str(tmp_path / "run"))
    start = capsys.readouterr().out
    assert "model.attention 'full' -> 'infini'" in start and "fresh: attention/balance" in start
    # A resume takes the model from the run's own checkpoint: init_from may be gone by then.
    gone = config.copy_and_resolve_references()
    gone.init_from = str(tmp_path / "deleted")
    resumed = loading.adopt_model(gone, str(tmp_path / "run"))
    assert resumed.model.d_model == 32 and resumed.data.tokenizer == f"{imported}/tokenizer"
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"]["d_model"] == 32 and saved["model"]["attention"] == "infini"
    assert saved["data"]["tokenizer"] == f"{imported}/tokenizer"  # the model's own tokenizer
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert rows[-1]["loss"] < rows[0]["loss"] - 1.0
    assert "passkey" in last
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Memory and balance factors" in report and "| 1 |" in report.split("‖M‖_F")[1]
    # The cold start: the imported weights in the infini model before any step. The first
    # segment (empty memory, empty_memory="local") is exactly the pretrained model; the second
    # is the pretrained model on that segment alone (positions restart) with g(-3) = 4.7% of
    # the memory read mixed in.
    imported_config, _, params = loading.load_params(imported)
    base = validate(imported_config)
    c = config.model
    infini = dataclasses.replace(
        base,
        attention="infini",
        segment_len=c.segment_len,
        gate=c.gate,
        empty_memory=c.empty_memory,
        memory_update=c.memory_update,
    )
    with_balance = dict(params)
    with_balance["layers"] = dict(params["layers"])
    with_balance["layers"]["attention"] = dict(
        params["layers"]["attention"], balance=jnp.full((2, 4), -3.0)
    )
    tokens = jnp.asarray(np.tile(TOKENS, (1, 6))[:, :128])  # 2 segments of 64
    ours, _ = model.sequence_logits(infini, with_balance, tokens)
    n = infini.segment_len
    for s, lo in ((0, 1e-5), (1, 0.2)):  # measured: 0 and 0.09
        alone, _ = model.sequence_logits(base, params, tokens[:, s * n : (s + 1) * n])
        error = relative_error(np.asarray(ours[:, s * n : (s + 1) * n]), np.asarray(alone))
        assert error < lo and (s == 0 or error > 1e-4), (s, error)  # segment 1 reads memory

"""Configs: the seed's parameter count, presets, and one clear error per bad field."""

import jax
import pytest

from infini_jax import model
from infini_jax.config import load_config, save_config, validate
from infini_jax.errors import ConfigError
from tests.conftest import config_path


def n_params(spec):
    cfg = validate(load_config(config_path(spec)))
    return model.count_params(jax.eval_shape(lambda: model.init_params(cfg, jax.random.key(0))))


def test_seed_300m_parameter_count_is_exact():
    # 12 × 16,779,272 per layer (incl. 8 gate scalars) + 2 × 49,152 × 1,024 + 1,024.
    assert n_params("llama_300m_infini.py") == 302_015_584
    assert n_params("llama_300m_infini.py:linear") == 302_015_584


@pytest.mark.parametrize("preset", ["", ":full", ":local"])
def test_baseline_is_the_same_model_without_gate_scalars(preset):
    assert n_params("llama_300m_baseline.py" + preset) == 302_015_584 - 12 * 8


def test_presets_set_what_they_say():
    assert load_config(config_path("llama_300m_baseline.py:local")).model.attention == "local"
    assert load_config(config_path("llama_300m_baseline.py")).model.attention == "full"
    assert load_config(config_path("llama_300m_infini.py:linear")).model.memory_update == "linear"
    assert load_config(config_path("tiny.py:local")).model.attention == "local"
    for name in ("tiny.py:delta_l2", "study.py:delta_l2", "llama_300m_infini.py:delta_l2"):
        m = load_config(config_path(name)).model  # the study's best arm, on every base
        memory = (m.memory_update, m.memory_features, m.write_strength, m.decay)
        assert memory == ("exact_delta", "l2", False, "none"), name
    with pytest.raises(ValueError, match="unknown preset 'bogus'"):
        load_config(config_path("tiny.py:bogus"))


BAD = [
    ("model.num_heads", 6, r"config.model.num_heads=6 does not divide config.model.d_model=128"),
    ("model.num_kv_heads", 3, r"config.model.num_kv_heads=3 does not divide .*num_heads=4"),
    ("data.seq_len", 250, r"config.data.seq_len=250 is not a multiple of .*segment_len=64"),
    ("model.attention", "sparse", r"config.model.attention='sparse' is not one of"),
    ("model.gate", "tanh", r"config.model.gate='tanh' is not one of"),
    ("model.balance_init", 3.0, r"config.model.balance_init=3.0 is where the hard-sigmoid"),
    ("model.memory_update", "hebb", r"config.model.memory_update='hebb' is not one of"),
    ("model.decay", "often", r"config.model.decay='often' is not one of"),
    ("model.decay_init", 1.0, r"config.model.decay_init=1.0 must be in \(0, 1\)"),
    ("model.write_strength_init", 1.5, r"config.model.write_strength_init=1.5 must be in"),
    ("model.delta_chunk", 0, r"config.model.delta_chunk=0 must be an integer in 1..64"),
    ("model.empty_memory", "zero", r"config.model.empty_memory='zero' is not one of"),
    ("model.remat_policy", "all", r"config.model.remat_policy='all' is not one of"),
    ("model.layer_remat_policy", "none", r"config.model.layer_remat_policy=.none. is not one of"),
    ("data.long_documents", "crop", r"config.data.long_documents=.crop. is not one of"),
    ("model.dtype", "float16", r"config.model.dtype='float16' is not one of"),
    ("model.d_model", 0, r"config.model.d_model=0 must be a positive integer"),
    ("model.vocab_size", -5, r"config.model.vocab_size=-5 must be a positive integer"),
    ("model.num_layers", 0, r"config.model.num_layers=0 must be a positive integer"),
    ("model.segment_len", 0, r"config.model.segment_len=0 must be a positive integer"),
    ("model.mlp_dim", -1, r"config.model.mlp_dim=-1 must be a positive integer"),
    ("data.batch_size", 0, r"config.data.batch_size=0 must be a positive integer"),
    ("total_steps", 0, r"config.total_steps=0 must be a positive integer"),
    ("model.init_std", 0.0, r"config.model.init_std=0.0 must be > 0"),
    ("model.bptt_segments", -1, r"config.model.bptt_segments=-1 must be 0"),
    ("mesh.fsdp", 0, r"config.mesh.fsdp=0 must be a positive integer or -1"),
    ("optimizer.b2", 1.0, r"config.optimizer.b2=1.0 must be in \[0, 1\)"),
    ("optimizer.learning_rate", -1e-3, r"config.optimizer.learning_rate=-0.001 must be >= 0"),
    ("optimizer.clip_norm", 0.0, r"config.optimizer.clip_norm=0.0 must be > 0"),
]


def test_l2_features_need_the_exact_delta(tiny_config):
    tiny_config.model.memory_update, tiny_config.model.memory_features = "delta", "l2"
    with pytest.raises(ConfigError, match=r"memory_features='l2' with memory_update='delta' div"):
        validate(tiny_config)


@pytest.mark.parametrize("field,value,message", BAD, ids=[b[0] for b in BAD])
def test_bad_field_gives_its_message(tiny_config, field, value, message):
    validate(tiny_config)  # the default is valid
    section, _, name = field.rpartition(".")
    target = tiny_config[section] if section else tiny_config
    target[name] = value
    with pytest.raises(ConfigError, match=message) as info:
        validate(tiny_config)
    assert "\n" not in str(info.value)  # one line


def test_head_dim_must_be_even(tiny_config):
    tiny_config.model.d_model = 12
    tiny_config.model.num_heads = 4
    tiny_config.model.num_kv_heads = 4
    with pytest.raises(ConfigError, match="head_dim = 3 must be a positive even integer"):
        validate(tiny_config)


def test_two_free_mesh_axes_are_rejected(tiny_config):
    tiny_config.mesh.fsdp = -1
    with pytest.raises(ConfigError, match="at most one of data, fsdp, tensor may be -1"):
        validate(tiny_config)


def test_unknown_model_field_is_rejected(tiny_config):
    tiny_config.model.num_experts = 4
    with pytest.raises(ConfigError, match=r"unknown fields \['num_experts'\]"):
        validate(tiny_config)


def test_full_attention_ignores_segment_divisibility(tiny_config):
    tiny_config.model.attention = "full"
    tiny_config.data.seq_len = 250
    validate(tiny_config)


def test_missing_config_file_is_one_clear_error():
    with pytest.raises(ConfigError, match="config file configs/nope.py does not exist"):
        load_config("configs/nope.py")


def test_saved_config_round_trips(tiny_config, tmp_path):
    import json

    path = save_config(tiny_config, str(tmp_path))
    with open(path) as f:
        saved = json.load(f)
    assert saved == json.loads(json.dumps(tiny_config.to_dict()))  # tuples are JSON lists
    assert saved["model"]["segment_len"] == 64 and saved["sharding_rules"][0] == ["embed", "fsdp"]


@pytest.mark.parametrize(
    "spec", ["llama_300m_infini.py", "llama_300m_baseline.py:local", "tiny.py", "tiny.py:full"]
)
def test_flops_param_formula_matches_the_model(spec):
    from infini_jax.model.flops import flops_per_token, param_count

    cfg = validate(load_config(config_path(spec)))
    assert param_count(cfg) == n_params(spec)
    n = load_config(config_path(spec)).data.seq_len
    assert flops_per_token(cfg, n) > 6 * (param_count(cfg) - cfg.vocab_size * cfg.d_model)


def test_docs_list_every_field_with_its_comment():
    """docs/config.md's tables are generated from base_config; stale docs or a field without
    a comment fail here (regenerate: python -m infini_jax.config --docs=docs/config.md)."""
    from infini_jax.config import field_comments, fields_markdown
    from infini_jax.defaults import base_config
    from tests.conftest import ROOT

    def leaves(c, prefix=""):
        for k, v in c.items():
            if hasattr(v, "items"):
                yield from leaves(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}"

    comments = field_comments()
    fields = set(leaves(base_config()))
    assert len(fields) > 60
    assert all(comments.get(f) for f in fields), sorted(f for f in fields if not comments.get(f))
    with open(f"{ROOT}/docs/config.md") as f:
        docs = f.read()
    assert fields_markdown() in docs
    for f in fields:
        assert f"| `{f.rpartition('.')[2]}` |" in docs


def test_presets_are_base_plus_overrides_and_unknown_ones_are_one_line():
    tiny = load_config(config_path("tiny.py"))
    assert tiny.model.attention == "infini" and tiny.optimizer.learning_rate == 1e-2
    with pytest.raises(ConfigError, match=r"unknown preset 'x' for tiny.py: use one of \['', "):
        load_config(config_path("tiny.py:x"))
    ft = load_config(config_path("passkey_finetune.py:llama_300m_infini"))
    assert ft.model.num_layers == 12 and ft.init_from_required and ft.data.batch_size == 64
    with pytest.raises(ConfigError, match="there is no configs/nope.py"):
        load_config(config_path("passkey_finetune.py:nope"))

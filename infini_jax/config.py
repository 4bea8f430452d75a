"""Configs: loading, presets, checking and saving; docs/config.md's field tables.

Every field, its default and its meaning are in `infini_jax/defaults.py:base_config()`. Preset
files in `configs/` start from it and set only what differs. The typed sections (`ModelConfig`,
`DataConfig`, `OptimizerConfig`, `MeshConfig`) are derived from it and each checks its own
fields; `validate` checks the rest and the fields that depend on two sections, once, before
anything compiles. docs/config.md's field tables are generated from `base_config`'s comments:
`python -m infini_jax.config --docs=docs/config.md` (a test fails when they are stale).
"""

import ast
import importlib.util
import inspect
import io
import json
import os
import sys
import tokenize
import traceback

import ml_collections

from infini_jax import storage
from infini_jax.data.config import DataConfig
from infini_jax.defaults import base_config
from infini_jax.errors import ConfigError, check, check_positive_ints, is_int
from infini_jax.model.config import ModelConfig
from infini_jax.ops import kernels
from infini_jax.sections import MeshConfig, OptimizerConfig, WandbConfig, check_rules

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(spec: str) -> ml_collections.ConfigDict:
    """Loads `path/to/config.py[:preset]` as `config_flags.DEFINE_config_file` would."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path} does not exist; pass --config=configs/<name>.py")
    return call_python_file(path, "get_config", arg or None, what="config file")


def call_python_file(path: str, function: str, *args, what: str):
    """Runs the Python file `path` (its directory first on `sys.path`, as a script) and returns
    `function(*args)` from it. Any failure (a syntax error, an exception, no such function) is
    a `ConfigError` naming the file and the line: user files are never a traceback."""
    name = os.path.splitext(os.path.basename(path))[0]
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))  # sibling modules
    try:
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        if not callable(getattr(module, function, None)):
            raise ConfigError(f"{what} {path} defines no {function}()")
        return getattr(module, function)(*args)
    except (ConfigError, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 - the user's file: one line, not a traceback
        raise ConfigError(f"{what} {path} cannot be loaded ({file_error(e, path)})") from None
    finally:
        sys.path.remove(os.path.dirname(os.path.abspath(path)))


def file_error(error: BaseException, path: str) -> str:
    """`Type: message at line N` of an error raised while running the Python file `path`."""
    if isinstance(error, SyntaxError):
        return f"SyntaxError: {error.msg} at line {error.lineno}"
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == path]
    where = f" at line {frames[-1].lineno}" if frames else ""
    return f"{type(error).__name__}: {error}{where}"


def override(
    config: ml_collections.ConfigDict, overrides: dict, what: str = "override"
) -> ml_collections.ConfigDict:
    """Sets dotted fields (`{"model.attention": "local"}`) as `--config.a.b=v` would; an
    unknown field is a ConfigError naming `what` set it. Returns `config`, changed in place."""
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for name in (*parents, leaf):
            check(name in node, f"{what} {key}: config has no field {name!r}")
            if name != leaf:
                node = node[name]
        node[leaf] = type(node[leaf])(value) if isinstance(node[leaf], float) else value
    return config


def preset(config: ml_collections.ConfigDict, arg: str | None, presets: dict, name: str):
    """Applies preset `arg` of a config file: `presets` maps names ("" = no argument) to dotted
    overrides. An unknown name is one ConfigError line listing the known ones."""
    check((arg or "") in presets, f"unknown preset {arg!r} for {name}: use one of {list(presets)}")
    return override(config, presets[arg or ""])


def load_preset(name: str) -> ml_collections.ConfigDict:
    """`configs/<file>.py[:preset]` for `name` = "file[:preset]", as a preset file that builds
    on another one loads it."""
    file, _, arg = name.partition(":")
    return load_config(os.path.join(REPO, "configs", f"{file}.py") + (f":{arg}" if arg else ""))


def validate(config: ml_collections.ConfigDict) -> ModelConfig:
    """Checks every field; raises `ConfigError` on the first bad one. Returns the ModelConfig."""
    for section in ("mesh", "model", "data", "optimizer", "report", "profile"):
        check(section in config, f"config.{section} is missing; start from base_config()")
    check(is_int(config.seed), f"config.seed={config.seed!r} must be an integer")
    names = ("total_steps", "log_every_steps", "checkpoint_every_steps", "keep_checkpoints")
    check_positive_ints({k: config[k] for k in (*names, "eval_batches")}, "")
    for name in ("permanent_checkpoint_every_steps", "eval_every_steps", "checkpoint_timeout_s"):
        value = config[name]
        check(is_int(value) and value >= 0, f"config.{name}={value!r} must be an integer >= 0")
    minutes = config.get("checkpoint_every_minutes", 0.0)
    check(
        isinstance(minutes, (int, float)) and not isinstance(minutes, bool) and minutes >= 0,
        f"config.checkpoint_every_minutes={minutes!r} must be a number >= 0 (0 = off)",
    )
    if "wandb" in config:
        WandbConfig.from_config(config.wandb)
    MeshConfig.from_config(config.mesh)
    model_cfg = ModelConfig.from_config(config.model)
    data = DataConfig.from_config(config.data)
    if model_cfg.attention != "full":
        n = model_cfg.segment_len
        check(
            data.seq_len % n == 0,
            f"config.data.seq_len={data.seq_len} is not a multiple of config.model.segment_len="
            f"{n}; use e.g. {n * max(1, data.seq_len // n)}",
        )
    window = model_cfg.window_len(data.seq_len)  # seq_len is a multiple of segment_len here
    problem = kernels.check_window(model_cfg.attention_impl, window)
    check(
        not problem,
        f"config.model.attention_impl={model_cfg.attention_impl!r}: {problem} (the window here "
        f"is {window}: model.segment_len, or data.seq_len for full attention); use 'auto'",
    )
    multiples = config.report.passkey_multiples
    check(
        all(is_int(m) and m > 0 for m in multiples),
        "config.report.passkey_multiples must be positive integers (multiples of seq_len)",
    )
    check_positive_ints({"passkey_samples": config.report.passkey_samples}, "report.")
    start = config.profile.start_step
    check(is_int(start) and start >= 0, f"config.profile.start_step={start!r} must be >= 0")
    check_positive_ints({"num_steps": config.profile.num_steps}, "profile.")
    OptimizerConfig.from_config(config.optimizer)
    check(
        isinstance(config.init_from, str),
        f"config.init_from={config.init_from!r} must be a path (WORKDIR[/STEP]) or ''",
    )
    check(
        not (config.init_from_required and not config.init_from),
        "config.init_from is empty: this config fine-tunes a checkpoint; pass "
        "--config.init_from=WORKDIR[/STEP] of the pretrained run",
    )
    check_rules(config.sharding_rules)
    return model_cfg


def save_config(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Writes the resolved config to `workdir/config.json`; returns its path."""
    path = storage.join(workdir, "config.json")
    storage.write_text(path, json.dumps(config.to_dict(), indent=2, sort_keys=True))
    return path


def field_comments() -> dict[str, str]:
    """`{"model.gate": "g(b): ...", "model": "<section comment>", ...}` from the comments in
    `base_config`'s source: the comment at the end of a field's line, or the comment lines
    right above it (how docs/config.md is generated)."""
    source = inspect.getsource(base_config)
    comments = {
        tok.start[0]: tok.string.lstrip("#").strip()
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    }
    lines = source.splitlines()
    aliases: dict[str, str] = {}
    out: dict[str, str] = {}

    def path_of(node) -> str:
        if isinstance(node, ast.Name):
            return aliases.get(node.id, "")
        return f"{path_of(node.value)}.{node.attr}".lstrip(".")

    for node in ast.walk(ast.parse(source).body[0]):
        if not isinstance(node, ast.Assign):
            continue
        paths = [path_of(t) for t in node.targets if isinstance(t, ast.Attribute)]
        for target in node.targets:
            if isinstance(target, ast.Name):
                aliases[target.id] = paths[0] if paths else ""
        if not paths:
            continue
        text = comments.get(node.lineno)
        if text is None:
            above, row = [], node.lineno - 1
            while row in comments and not lines[row - 1].split("#")[0].strip():
                above.insert(0, comments[row])
                row -= 1
            text = " ".join(above)
        out[paths[0]] = text
    return out


MAPS = ("evals",)  # fields whose value is a map of named entries: one row each in the docs


def _leaves(config: ml_collections.ConfigDict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if f"{prefix}{key}" in MAPS:
            out[f"{prefix}{key}"] = {k: v.get("config", v) for k, v in value.items()} or {}
        elif isinstance(value, ml_collections.ConfigDict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


PRESET_COLUMNS = {"tiny": "tiny.py", "300M seed": "llama_300m_infini.py"}
DOCS_BEGIN = "<!-- fields: generated by python -m infini_jax.config --docs=docs/config.md -->"
DOCS_END = "<!-- end of generated fields -->"


def fields_markdown() -> str:
    """docs/config.md's field tables: one per section, every field with its default, the value
    in each preset of `PRESET_COLUMNS` where it differs, and its comment."""
    comments = field_comments()
    defaults = _leaves(base_config())
    presets = {k: _leaves(load_preset(v[:-3])) for k, v in PRESET_COLUMNS.items()}

    def show(value) -> str:
        text = json.dumps(value) if isinstance(value, str) else repr(value)
        return f"`{text}`".replace("|", "\\|")

    sections: dict[str, list[str]] = {}
    for path in (p for p in comments if p in defaults):  # in base_config's order
        parent, _, name = path.rpartition(".")
        default = defaults[path]
        cells = [show(p[path]) if p[path] != default else "" for p in presets.values()]
        row = f"| `{name}` | {show(default)} | " + " | ".join(cells) + f" | {comments[path]} |"
        sections.setdefault(parent, []).append(row)
    out = []
    for parent, rows in sections.items():
        out += ["", f"### `{parent}`" if parent else "### Top level", ""]
        if comments.get(parent):
            out += [comments[parent], ""]
        out += [
            "| field | default | " + " | ".join(presets) + " | meaning |",
            "|---|---|" + "---|" * len(presets) + "---|",
            *rows,
        ]
    return "\n".join([DOCS_BEGIN, *out, "", DOCS_END])


def write_docs(path: str) -> None:
    """Replaces the generated block of `path` (between the markers) with `fields_markdown()`."""
    check(os.path.isfile(path), f"--docs={path} does not exist; pass docs/config.md")
    with open(path) as f:
        text = f.read()
    check(DOCS_BEGIN in text and DOCS_END in text, f"{path} has no generated-fields markers")
    head, rest = text.split(DOCS_BEGIN, 1)
    tail = rest.split(DOCS_END, 1)[1]
    with open(path, "w") as f:
        f.write(head + fields_markdown() + tail)


def main(argv: list[str] | None = None) -> None:
    from absl import flags

    from infini_jax import cli

    flags.DEFINE_string("docs", None, "Rewrite the generated field tables of this Markdown file.")

    def run(_):
        if not flags.FLAGS.docs:
            print(fields_markdown())
            return
        write_docs(flags.FLAGS.docs)
        print(f"wrote the field tables of {flags.FLAGS.docs}")

    cli.run(run, argv)


if __name__ == "__main__":
    main()

"""Every `python -m infini_jax…` command line in the documentation is checked without running
it: README.md, docs/*.md, launch/README.md and the configs' docstrings. For each command: the
module exists and is a command (it answers --helpfull); every `--flag` is one it defines;
every `--config.a.b` is a field of the config it names (or of its default config); every
file in the repository that it names exists. Commands that need hardware or hours are
checked the same way (none is run)."""

import ast
import glob
import os
import re
import shlex
from functools import cache

import pytest

from infini_jax.config import load_config
from tests import forkrun
from tests.conftest import ROOT

DOCS = ("README.md", "docs/*.md", "launch/README.md")
PLACEHOLDER = re.compile(r"[<>{}]|\.\.\.|…|\b[A-Z][A-Z_]{2,}\b|\$")
REPO_DIRS = ("configs/", "launch/", "docs/", "infini_jax/", "tests/")


def _logical_lines(text: str) -> list[str]:
    """Lines with backslash continuations joined."""
    out, current = [], ""
    for line in text.splitlines():
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        out.append(current + line)
        current = ""
    return out


def _commands_in(text: str) -> list[str]:
    """The `python -m infini_jax…` commands in `text`, each from `python` to the end of its
    shell command (before `&&`, `;`, `|`, `>`, a comment or a closing backtick)."""
    found = []
    for line in _logical_lines(text):
        for match in re.finditer(r"python3? -m infini_jax[\w.]*", line):
            rest = line[match.start() :]
            rest = re.split(r"\s(?:&&|;|\||>|2>|#)\s|`", rest)[0]
            found.append(rest.strip())
    return found


@cache
def documented() -> list[tuple[str, str]]:
    """(where, command) for every documented command."""
    out = []
    for pattern in DOCS:
        for path in sorted(glob.glob(os.path.join(ROOT, pattern))):
            with open(path) as f:
                text = f.read()
            out += [(os.path.relpath(path, ROOT), c) for c in _commands_in(text)]
    for path in sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.py"), recursive=True)):
        with open(path) as f:
            doc = ast.get_docstring(ast.parse(f.read())) or ""
        out += [(os.path.relpath(path, ROOT), c) for c in _commands_in(doc)]
    return out


def _help(module: str) -> str:
    """`--helpfull` of `module` ("" where it is not a command; absl exits 1 after it)."""
    r = forkrun.run(module, ["--helpfull"], cwd=ROOT, env=dict(os.environ), timeout=300)
    return r.stdout if re.search(r"^\s+--(\[no\])?helpfull:", r.stdout, re.M) else ""


@pytest.fixture(scope="module")
def helps() -> dict[str, str]:
    """`--helpfull` of every documented module."""
    return {
        m: _help(m)
        for m in sorted({shlex.split(c)[2] for _, c in documented()} - {"infini_jax.<command>"})
    }


def _flags(help_text: str) -> set[str]:
    return {
        name
        for no, name in re.findall(r"^\s+--(\[no\])?([\w.-]+):", help_text, re.M)
        for name in ([name, f"no{name}"] if no else [name])
    }


def _default_config(help_text: str) -> str | None:
    m = re.search(r"^\s+--config: .*?\(default: '([^']+)'\)", help_text, re.M | re.S)
    return m.group(1) if m and m.group(1) != "None" else None


@cache
def _config(spec: str):
    return load_config(os.path.join(ROOT, spec) if not os.path.isabs(spec) else spec)


def _has_field(config, dotted: str) -> bool:
    node = config
    for part in dotted.split("."):
        if not hasattr(node, "keys") or part not in node:
            return False
        node = node[part]
    return True


def test_the_docs_have_commands_to_check():
    where = {w for w, _ in documented()}
    assert len(documented()) > 80 and "README.md" in where and "launch/README.md" in where
    assert any(w.startswith("configs/") for w in where)


def problems_of(where: str, command: str, helps: dict[str, str]) -> list[str]:
    """What is wrong with one documented command (nothing: [])."""
    problems = []
    words = shlex.split(command)
    module, args = words[2], words[3:]
    if PLACEHOLDER.search(module):  # e.g. "python -m infini_jax.<command>" in prose
        return []
    text = helps[module] if module in helps else _help(module)
    if not text:
        return [f"{where}: {module} is not a command (no --helpfull)"]
    known = _flags(text)
    config = None
    spec = next((a.split("=", 1)[1] for a in args if a.startswith("--config=")), None)
    spec = spec or _default_config(text)
    if spec and not PLACEHOLDER.search(spec) and spec.split(":")[0].endswith(".py"):
        path = spec.split(":")[0]
        if not os.path.exists(os.path.join(ROOT, path)):
            problems.append(f"{where}: {command}: no file {path}")
        else:
            config = _config(spec)
    for arg in args:
        if not arg.startswith("--") or PLACEHOLDER.search(arg.split("=")[0]):
            if not arg.startswith("-") and arg.startswith(REPO_DIRS):
                file = arg.split(":")[0]
                if not PLACEHOLDER.search(file) and not glob.glob(os.path.join(ROOT, file)):
                    problems.append(f"{where}: {command}: no file {file}")
            continue
        name, _, value = arg[2:].partition("=")
        if name == "config" and "config" in known:
            continue  # its file is checked above
        if name.startswith("config."):
            if config is not None and not _has_field(config, name[len("config.") :]):
                problems.append(f"{where}: {command}: {spec} has no field {name[7:]}")
        elif name not in known:
            problems.append(f"{where}: {command}: {module} has no flag --{name}")
        elif value.startswith(REPO_DIRS) and not PLACEHOLDER.search(value):
            file = value.split(":")[0]
            if not glob.glob(os.path.join(ROOT, file)):
                problems.append(f"{where}: {command}: no file {file}")
    return problems


def test_every_documented_command_is_a_command_with_its_flags_fields_and_files(helps):
    problems = [p for where, c in documented() for p in problems_of(where, c, helps)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "command, problem",
    [
        ("python -m infini_jax.train --workdir=/tmp/x --no_such_flag=1", "has no flag --no_such"),
        ("python -m infini_jax.train --config.model.nope=1", "configs/tiny.py has no field model"),
        ("python -m infini_jax.train --config=configs/missing.py:x", "no file configs/missing.py"),
        ("python -m infini_jax.sweep --sweep=configs/sweeps/nothing.py", "no file configs/swe"),
        ("python -m infini_jax.nothing --x=1", "infini_jax.nothing is not a command"),
    ],
)
def test_the_check_finds_what_is_wrong(helps, command, problem):
    (found,) = problems_of("here", command, helps)
    assert problem in found

"""The one command-line shape: absl flags, and a runner that turns the project's errors into
one line on stderr and exit status 2.

Every program (train, evaluate, generate, plan, sweep, bench, prepare, tokenizer, config)
defines its flags with absl (configs with `config_flags.DEFINE_config_file`) and ends in
`cli.run(main)`. A bad flag, an unknown `--config.<field>`, a config file that cannot be
loaded, a missing required flag or any `infini_jax.errors.Error` is one line, before any
compile: `config error: ...` for config fields, `error: ...` for the rest.
"""

import contextlib
import logging as std_logging
import os
import re
import sys
from collections.abc import Callable

from absl import app, flags, logging
from ml_collections.config_flags.config_flags import is_config_flag

from infini_jax.errors import ConfigError, Error


def fail(message: str, now: bool = False) -> None:
    """Prints `message` as one line on stderr and exits with status 2; `now`: without waiting
    for other threads (e.g. a background checkpoint save retrying an unreachable bucket)."""
    if now:  # other threads (still running) may log no line after it
        std_logging.disable(std_logging.CRITICAL)
    print(" ".join(str(message).split()), file=sys.stderr)
    if now:
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(2)
    sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
    """absl `flags_parser`: a bad flag, an unknown `--config.<field>` or a config file that
    cannot be loaded is one line and exit status 2, not a traceback."""
    try:
        rest = flags.FLAGS(argv)
    except flags.Error as e:
        lines = [ln for ln in str(e).splitlines() if ln.strip()]
        config = re.match(r"flag (--\w+=\S+): Error whilst parsing config file", lines[0])
        if config:  # the config file raised: its own error and line, not config_flags' trace
            where = [ln.split(", ")[1] for ln in lines if ln.strip().startswith('File "')]
            at = f" at {where[-1]}" if where and where[-1].startswith("line") else ""
            fail(f"error: {config.group(1)}: cannot load it ({lines[-1].strip()}{at})")
        fail(f"error: {lines[-1] if lines else e} (pass --helpfull to see all flags)")
    except SyntaxError as e:  # a config file that does not parse (config_flags lets it through)
        spec = next((a for a in argv if a.startswith("--config=")), "--config")
        fail(f"error: {spec}: cannot load it (SyntaxError: {e.msg} at line {e.lineno})")
    except (KeyError, AttributeError) as e:
        if "has no attribute 'get_config'" in str(e):  # config_flags found no get_config()
            spec = next((a for a in argv if a.startswith("--config=")), "--config")
            fail(f"error: {spec}: cannot load it (it defines no get_config())")
        name = re.sub(r"[\"']", "", str(e))
        field = next((a for a in argv if a.startswith("--config.") and name in a), "--config.?")
        fail(
            f"error: unknown config field {name!r} in {field.split('=')[0]}; "
            "see the config file for the fields it has"
        )
    flag = flags.FLAGS["config"] if "config" in flags.FLAGS else None
    config = flag.value if flag is not None and is_config_flag(flag) else None
    if config is not None:
        try:  # a config file that could not be loaded raises on first use
            config.to_dict()
        except OSError as e:
            reason = [ln.strip() for ln in str(e).splitlines() if ln.strip()][-1]
            fail(f"error: --config={flag.config_filename}: cannot load it ({reason})")
    return rest


def require(*names: str) -> None:
    """An `Error` naming the first of the flags `names` that was not given."""
    for name in names:
        if flags.FLAGS[name].value in (None, ""):
            raise Error(f"--{name} is required (see --help)")


def int_list(values: list[str], flag: str, minimum: int = 1) -> list[int]:
    """A comma-separated list flag as integers >= `minimum`; an `Error` naming the flag."""
    try:
        out = [int(v) for v in values]
    except ValueError:
        out = []
    if not out or min(out) < minimum:
        raise Error(f"--{flag}={','.join(values)} must be comma-separated integers >= {minimum}")
    return out


def writable(path: str, flag: str, directory: bool = True, keep: bool = False) -> None:
    """Before any work: `path` (an output directory, or with `directory=False` a file; "" =
    none asked for) can be written. A probe file is written and removed in it (its directory);
    the directories created for the probe are removed again (unless `keep`), so a later
    failure leaves nothing behind. An `Error` naming the flag otherwise."""
    from infini_jax import storage

    if not path:
        return
    where = storage.absolute(path if directory else storage.dirname(storage.absolute(path)))
    created, parent = [], where
    while not keep and not storage.is_remote(parent) and not os.path.exists(parent):
        created.append(parent)
        parent = os.path.dirname(parent)
    try:
        storage.makedirs(where)
        probe = storage.join(where, f".write_test_{os.getpid()}")
        storage.write_text(probe, "ok")
        storage.remove(probe)
    except OSError as e:
        reason = e.strerror or " ".join(str(e).split())[:200]
        if storage.is_remote(where) and isinstance(e, FileNotFoundError):
            reason = "no such bucket, or no access to it"
        raise Error(f"--{flag}={path} cannot be written ({reason}); choose another") from None
    finally:
        for d in created:  # deepest first
            with contextlib.suppress(OSError):
                os.rmdir(d)


class _MessageOnly(std_logging.Filter):
    """Log records print their message without the traceback attached to them: a library's
    background thread (orbax's async save, gcsfs's connections) logging the failure that the
    program itself reports as one line must not print a traceback beside it."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def run(main: Callable[[list[str]], object], argv: list[str] | None = None) -> None:
    """`app.run(main)` with the project's flag parser; an `Error` from `main` is one line on
    stderr and exit status 2. Library INFO logs (orbax's, per operation) stay off the console,
    and library warnings and errors print without tracebacks."""

    def wrapped(args):
        logging.set_verbosity(logging.WARNING)
        logging.get_absl_handler().addFilter(_MessageOnly())
        try:
            return main(args)
        except Error as e:
            fail(f"{'config error' if isinstance(e, ConfigError) else 'error'}: {e}")

    app.run(wrapped, argv=argv, flags_parser=parse_flags)


def enable_compilation_cache(directory: str) -> None:
    """Persistent XLA compilation cache in `directory` ("" = off): a restarted or repeated job
    loads its compiled steps instead of compiling them again."""
    import jax

    if not directory:
        return
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def define_job_flags() -> None:
    """The flags of a job that runs the model (train, evaluate): the compilation cache and the
    distributed job (--coordinator_address / --num_processes / --process_id, defaults from
    $INFINI_JAX_COORDINATOR, $INFINI_JAX_NUM_PROCESSES, $INFINI_JAX_PROCESS_ID, which
    `launch/local.sh` sets; --distributed auto-detects a SLURM, TPU pod, GKE or MPI job)."""
    env = os.environ.get
    flags.DEFINE_string(
        "compilation_cache_dir",
        env("INFINI_JAX_COMPILATION_CACHE", "~/.cache/infini_jax/xla"),
        "Persistent compilation cache directory ('' = off; default from "
        "$INFINI_JAX_COMPILATION_CACHE).",
    )
    flags.DEFINE_string(
        "coordinator_address", env("INFINI_JAX_COORDINATOR"), "host:port of process 0."
    )
    flags.DEFINE_integer(
        "num_processes", _env_int("INFINI_JAX_NUM_PROCESSES"), "Processes in the job."
    )
    flags.DEFINE_integer("process_id", _env_int("INFINI_JAX_PROCESS_ID"), "This process's index.")
    flags.DEFINE_bool(
        "distributed",
        env("INFINI_JAX_DISTRIBUTED", "") not in ("", "0"),
        "Call jax.distributed.initialize() with the cluster's own settings (SLURM, Cloud TPU, "
        "GKE, MPI) when no --coordinator_address is given.",
    )


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def start_job() -> None:
    """Enables the compilation cache and joins the multi-process job the flags describe.

    One process per host (or per GPU): every process runs the same program, feeds its share
    of the global batch, and JAX's collectives join them. CPU processes use gloo collectives.
    """
    import jax

    f = flags.FLAGS
    enable_compilation_cache(f.compilation_cache_dir)
    if not (f.coordinator_address or f.distributed):
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if f.coordinator_address:
        if f.num_processes is None or f.process_id is None:
            raise Error("--coordinator_address needs --num_processes and --process_id too")
        jax.distributed.initialize(f.coordinator_address, f.num_processes, f.process_id)
    else:
        jax.distributed.initialize()

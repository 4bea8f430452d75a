"""Shared command-line plumbing: flag parsing that turns config mistakes into one line."""

import os
import re
import sys

import jax
from absl import flags, logging


def parse_flags(argv: list[str]) -> list[str]:
    """absl `flags_parser` for `app.run`: an unknown `--config.<field>` or a bad value is one
    line on stderr and exit status 2, not a traceback."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        sys.exit(f"error: {e}\nPass --helpfull to see all flags.")
    except (KeyError, AttributeError) as e:
        name = re.sub(r"[\"']", "", str(e))
        field = next((a for a in argv if a.startswith("--config.") and name in a), "--config.?")
        sys.exit(
            f"error: unknown config field {name!r} in {field.split('=')[0]}; "
            "see the config file for the fields it has"
        )


def quiet_library_logs() -> None:
    """Keeps orbax's per-operation INFO lines off the console (warnings still show)."""
    logging.set_verbosity(logging.WARNING)


def enable_compilation_cache(directory: str) -> None:
    """Persistent XLA compilation cache in `directory` ("" = off): a restarted or repeated job
    loads its compiled steps instead of compiling them again."""
    if not directory:
        return
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def define_distributed_flags() -> None:
    """--coordinator_address / --num_processes / --process_id (defaults from
    $INFINI_JAX_COORDINATOR, $INFINI_JAX_NUM_PROCESSES, $INFINI_JAX_PROCESS_ID, which
    `launch/local.sh` sets) and --distributed (auto-detect a SLURM, TPU pod, GKE or MPI job)."""
    env = os.environ.get
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


def init_distributed() -> None:
    """Joins the multi-process job described by the distributed flags, if any.

    One process per host (or per GPU): every process runs the same program, feeds its share
    of the global batch, and JAX's collectives join them. CPU processes use gloo collectives.
    """
    f = flags.FLAGS
    if not (f.coordinator_address or f.distributed):
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if f.coordinator_address:
        if f.num_processes is None or f.process_id is None:
            sys.exit("error: --coordinator_address needs --num_processes and --process_id too")
        jax.distributed.initialize(f.coordinator_address, f.num_processes, f.process_id)
    else:
        jax.distributed.initialize()


def define_compilation_cache_flag() -> None:
    flags.DEFINE_string(
        "compilation_cache_dir",
        os.environ.get("INFINI_JAX_COMPILATION_CACHE", "~/.cache/infini_jax/xla"),
        "Persistent compilation cache directory ('' = off; default from "
        "$INFINI_JAX_COMPILATION_CACHE).",
    )

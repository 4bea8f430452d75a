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


def define_compilation_cache_flag() -> None:
    flags.DEFINE_string(
        "compilation_cache_dir",
        os.environ.get("INFINI_JAX_COMPILATION_CACHE", "~/.cache/infini_jax/xla"),
        "Persistent compilation cache directory ('' = off; default from "
        "$INFINI_JAX_COMPILATION_CACHE).",
    )

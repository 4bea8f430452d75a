"""Shared command-line plumbing: flag parsing that turns config mistakes into one line."""

import re
import sys

from absl import flags


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

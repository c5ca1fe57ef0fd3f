"""``python -m relaxkd.wordnet [--data-dir DIR]``: make sure NLTK can read WordNet 3.0."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from relaxkd.errors import UserError
from relaxkd.wordnet.install import DATA_DIR_ENV, ensure_wordnet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m relaxkd.wordnet",
        description="Find WordNet 3.0 for NLTK, or build it offline from Debian's wordnet files.",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"NLTK data directory to build into (default: ${DATA_DIR_ENV}, else ~/nltk_data)",
    )
    args = parser.parse_args(argv)
    try:
        wn = ensure_wordnet(args.data_dir)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return UserError.exit_code
    print(f"WordNet {wn.get_version()} ready at {wn.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

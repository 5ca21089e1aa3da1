"""Writes the state definitions of docs/feed.schema.json from `ticker.core.view.FIELDS`.

python -m ticker.schema            # rewrite docs/feed.schema.json's state and full_state
python -m ticker.schema --check    # exit 1 if the file differs from the declaration
"""

import argparse
import json
from pathlib import Path

from ticker.core.view import state_schema

SCHEMA = Path(__file__).resolve().parent.parent / "docs" / "feed.schema.json"


def render(text: str) -> str:
    """The schema document `text` with its state definitions as the declaration says."""
    doc = json.loads(text)
    doc["$defs"].update(state_schema())
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ticker.schema", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only say whether it is current")
    parser.add_argument("--path", type=Path, default=SCHEMA)
    args = parser.parse_args(argv)
    text = args.path.read_text()
    fresh = render(text)
    if args.check:
        if fresh != text:
            print(f"{args.path} is stale: run python -m ticker.schema")
            return 1
        return 0
    if fresh != text:
        args.path.write_text(fresh)
        print(f"wrote {args.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

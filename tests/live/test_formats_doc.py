"""docs/formats.md is enough to write a producer: its example runs and counts exactly."""

import re
from pathlib import Path

import redis

from ticker.core.aggregate import State
from ticker.core.batch import decode
from ticker.keys import Keys

DOC = Path(__file__).parents[2] / "docs" / "formats.md"


def _example() -> str:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)[0]


def test_the_minimal_producer_of_the_docs_writes_a_run_that_counts_exactly(
    redis_url: str, namespace: str
) -> None:
    """The documented example, run as written, gives 2 orders, RMB 244.50 and an ended run."""
    code = _example().replace("redis.Redis()", f"redis.Redis.from_url({redis_url!r})")
    exec(code.replace("{main}", "{" + namespace + "}"), {})
    state = State()
    with redis.Redis.from_url(redis_url) as r:
        for _, fields in r.xrange(Keys(namespace).orders):
            state.apply(decode(fields))
    assert (state.orders, state.gmv_fen, state.ended, state.dead_letters) == (2, 24_450, True, 0)

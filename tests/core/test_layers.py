"""One-way imports between the consumer shells: sharding uses the aggregator and the merge
step; neither of those imports the other, nor sharding."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("module", "never"),
    [
        ("ticker.aggregator", ("ticker.sharding", "ticker.merge")),
        ("ticker.merge", ("ticker.sharding", "ticker.aggregator")),
        ("ticker.core.aggregate", ("redis", "asyncio", "aiohttp", "ticker.aggregator")),
        ("ticker.core.view", ("redis", "asyncio", "aiohttp", "ticker.core.aggregate")),
        ("ticker.core.codec", ("redis", "asyncio", "aiohttp", "ticker.aggregator")),
    ],
)
def test_a_module_does_not_import_the_layers_above_it(module: str, never: tuple[str, ...]) -> None:
    """Importing the module alone loads none of the modules it must not depend on."""
    check = f"import sys, {module}; print([m for m in {never!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout

"""The import arrows of `ticker` and `simulator`, read from the source: no cycle anywhere,
the core imports nothing above it (only the core and the leaf of names, `ticker.keys`), and
the simulator stands on the ticker's lower rooms only (its commands, in `ticker`, import it)."""

import ast
from pathlib import Path

import simulator
import ticker

ROOTS = [Path(ticker.__file__).parent, Path(simulator.__file__).parent]
LEAVES = {"ticker.keys"}  # names only; it imports nothing of the ticker
# What the simulator may use of the ticker: the core, the names, the errors, the Redis client
# and the backoff rule.
SIMULATOR_USES = (
    "ticker.core",
    "ticker.keys",
    "ticker.errors",
    "ticker.redis_io",
    "ticker.supervise",
)


def module_imports() -> dict[str, set[str]]:
    """Each module's imports of both packages made at import time (not inside functions)."""
    graph: dict[str, set[str]] = {}
    for path in (p for root in ROOTS for p in root.rglob("*.py")):
        parts = path.relative_to(ROOTS[0].parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found: set[str] = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names}
        graph[name] = {m for m in found if m.startswith(("ticker", "simulator"))}
    return {m: {i for i in graph[m] if i in graph and i != m} for m in graph}


def cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle, or [] when there is none (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str]:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return [*path[path.index(n) :], n]
            if n not in state and (found := visit(n)):
                return found
        state[m] = 2
        path.pop()
        return []

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return []


def test_no_module_of_the_package_takes_part_in_an_import_cycle() -> None:
    """Following the import-time imports never leads back to where it started."""
    assert cycle(module_imports()) == []


def test_the_core_imports_only_the_core_and_the_names_of_the_keys() -> None:
    """No arrow from `ticker.core` up to a shell module."""
    graph = module_imports()
    up = {m: graph[m] - LEAVES for m in graph if m.startswith("ticker.core")}
    assert {m: {i for i in imps if not i.startswith("ticker.core")} for m, imps in up.items()} == {
        m: set() for m in up
    }
    assert all(not graph[leaf] - {"ticker"} for leaf in LEAVES)


def test_the_simulator_uses_only_the_lower_rooms_of_the_ticker() -> None:
    """The simulator imports the core, the names, the errors and the Redis client, no shell."""
    graph = module_imports()
    used = {i for m in graph if m.startswith("simulator") for i in graph[m]}
    assert {i for i in used if i.startswith("ticker") and not i.startswith(SIMULATOR_USES)} == set()


def test_a_cycle_is_found_when_there_is_one() -> None:
    """The check itself sees a cycle of three modules."""
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]

"""The README's code map is the real tree: every module is in it, and each room imports only
rooms listed above it."""

import re
from pathlib import Path

from tests.test_imports import module_imports

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
MAP = README.split("## Code map", 1)[1].split("```", 2)[1]
ROOM = re.compile(r"\b(?:ticker|simulator)/(?:[\w/]*\.py|(?:\w+/)*)")


def rooms() -> list[str]:
    """The rooms the map names (a module's file or a package's folder), in its order."""
    found: list[str] = []
    for room in ROOM.findall(MAP):
        if room not in found:
            found.append(room)
    return found


def room_of(module: str) -> str:
    """The room a module lives in: its package's folder if the map names it, else its file."""
    parts = module.split(".")
    for depth in range(len(parts), 0, -1):
        if (folder := "/".join(parts[:depth]) + "/") in rooms() and folder != "ticker/":
            return folder
    return "/".join(parts) + ("/__init__.py" if module == "ticker" else ".py")


def test_every_module_is_in_the_code_map() -> None:
    """Each module of ticker and simulator has its room in the map; the core's are named."""
    assert {m for m in module_imports() if room_of(m) not in rooms()} == set()
    core = [m.rpartition(".")[2] for m in module_imports() if m.startswith("ticker.core.")]
    assert [n for n in core if not re.search(rf"^  {n} ", MAP, re.M)] == []


def test_each_room_imports_only_rooms_above_it_in_the_map() -> None:
    """Read top to bottom, the map is the import direction."""
    rank = {room: i for i, room in enumerate(rooms())}
    graph = module_imports()
    upward = {(m, i) for m in graph for i in graph[m] if rank[room_of(i)] > rank[room_of(m)]}
    assert upward == set()

"""`ticker live start|end` from a shell: defaults, refusals with the reason."""

from pathlib import Path

from tests.conftest import Ticker


def test_live_start_without_a_title_or_file_says_what_to_give(ticker: Ticker) -> None:
    """No event file and no --title: exit 2, 'give an event file or --title'."""
    done = ticker.run("live", "start")
    assert (done.returncode, "give an event file or --title" in done.stderr) == (2, True)


def test_a_second_live_start_is_refused_while_a_run_is_open(ticker: Ticker) -> None:
    """The open run is named and --new offered; with --new the new run opens."""
    assert ticker.run("live", "start", "--title", "One").returncode == 0
    again = ticker.run("live", "start", "--title", "Two")
    assert again.returncode == 2 and "still open" in again.stderr and "--new" in again.stderr
    assert ticker.run("live", "start", "--title", "Two", "--new").returncode == 0


def test_a_bad_event_file_names_the_setting(ticker: Ticker, tmp_path: Path) -> None:
    """An unknown currency format in the file: exit 2 naming `currency`."""
    (event := tmp_path / "e.toml").write_text('title = "x"\ncurrency = "yuan"\n')
    done = ticker.run("live", "start", str(event))
    assert done.returncode == 2 and "currency" in done.stderr


def test_live_end_without_a_live_run_says_so(ticker: Ticker) -> None:
    """Nothing open: exit 1 with how to start one."""
    done = ticker.run("live", "end")
    assert done.returncode == 1 and "ticker live start" in done.stderr

"""The command line as a whole: --version, every float flag finite, one progress bar per run, rounded bars,
and Ctrl-C/SIGTERM of any command without a traceback."""

import argparse
import io
import logging
import re
import signal

import numpy as np
import pytest
import tqdm.auto

import openmm_forecast
from openmm_forecast.benchmark import run_interleaved
from openmm_forecast.cli import build_parser, main
from openmm_forecast.cli._common import integer, number
from openmm_forecast.walkers import WalkerSamples

REAL_TQDM = tqdm.auto.tqdm


def test_version(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0 and capsys.readouterr().out.strip() == f"openmm-forecast {openmm_forecast.__version__}"


def _actions(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _actions(sub)
        else:
            yield parser.prog, action


def test_every_numeric_flag_is_validated_by_its_type():
    # One validation per kind of value (issue 21): argparse refuses a bad number before any work, naming the flag,
    # with exit 2; no flag takes a bare int or float (which accept inf, nan, 0 and -1 alike).
    actions = list(_actions(build_parser()))
    raw = [(prog, action.option_strings) for prog, action in actions if action.type in (int, float)]
    assert raw == [], f"numeric flags without bounds (use _common.number or integer): {raw}"
    numeric = [action for _, action in actions if getattr(action.type, "__name__", "") in ("number", "integer")]
    assert len(numeric) >= 50
    for action in numeric:
        for text in ("inf", "nan", "one", "1e400"):
            with pytest.raises(argparse.ArgumentTypeError):
                action.type(text)
    assert number(above=0)("2.5") == 2.5 and integer(1, 3)("3") == 3
    with pytest.raises(argparse.ArgumentTypeError, match=r"must be an integer between 1 and 3, got '4' \(why\)"):
        integer(1, 3, why="why")("4")


class RecordingBar(REAL_TQDM):
    """A real tqdm bar, always enabled, writing to a string; records itself and the logging handlers at updates."""

    bars = []

    def __init__(self, *args, **kwargs):
        kwargs.update(disable=False, file=io.StringIO())
        super().__init__(*args, **kwargs)
        self.redirected = []
        RecordingBar.bars.append(self)

    def update(self, n=1):
        self.redirected.append(any("Tqdm" in type(h).__name__ for h in logging.getLogger().handlers))
        return super().update(n)


def test_run_shows_one_bar_for_the_whole_run_with_log_lines_above_it(tmp_path, monkeypatch):
    import openmm_forecast.accelerator as accelerator_module

    RecordingBar.bars = []
    monkeypatch.setattr(tqdm.auto, "tqdm", RecordingBar)
    monkeypatch.setattr(accelerator_module, "tqdm", RecordingBar)
    arguments = ["run", "--model", "verlet", "--time", "0.4", "--report-interval", "0.1", "--checkpoint-interval",
                 "0.1", "--platform", "Reference", "--out", str(tmp_path / "run")]
    assert main(arguments) == 0
    assert len(RecordingBar.bars) == 1, "one bar for the run, not one per checkpoint chunk"
    bar = RecordingBar.bars[0]
    assert bar.total == 200 and bar.n == 200
    assert bar.redirected and all(bar.redirected)  # log lines go through tqdm.write, not onto the bar


class FakeArm:
    def sample(self, interval, wall_seconds, progress):
        wall = np.array([wall_seconds / 3.0 + 0.000123456])
        return WalkerSamples(np.zeros((1, 1, 22, 3), dtype=np.float32), np.array([1.0]), wall, 1.0, np.full((1, 1), 300.0))


def test_benchmark_bar_shows_rounded_seconds(monkeypatch):
    RecordingBar.bars = []
    monkeypatch.setattr(tqdm.auto, "tqdm", RecordingBar)
    run_interleaved({"plain": FakeArm(), "hybrid": FakeArm()}, 1.0, wall_seconds=1.0, slice_seconds=0.5,
                    progress=True)
    text = RecordingBar.bars[0].fp.getvalue()
    assert re.search(r"\d\.\d{3,}/", text) is None, text


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_any_command_stops_on_a_signal_without_a_traceback(signum, code, monkeypatch, tmp_path, capsys):
    import openmm_forecast.cli.compare as compare

    def interrupted(args):
        # SIGINT: Python's KeyboardInterrupt; SIGTERM: the CLI's handler.  raise_signal delivers to this thread and
        # runs the handler before returning (os.kill may land on a torch or tqdm thread, handled a few bytecodes later).
        signal.raise_signal(signum)
        raise AssertionError("the signal did not stop the command")

    monkeypatch.setattr(compare, "run", interrupted)
    ignoring = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a process that ignores Ctrl-C: the CLI still stops
    try:
        assert main(["compare", "a.npy", "b.npy", "--out", str(tmp_path)]) == code
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # the caller's handler is given back
    finally:
        signal.signal(signal.SIGINT, ignoring)
    error = capsys.readouterr().err.strip()
    assert "interrupted" in error and len(error.splitlines()) == 1 and "Traceback" not in error

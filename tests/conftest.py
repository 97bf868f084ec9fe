"End-to-end test helpers: a small synthetic dataset, and the CLI run in-process or as a real process."
import contextlib, io, os, subprocess, sys
from pathlib import Path

import pytest

from trainbench.cli import main
from trainbench.task import get_task

BIN = Path(sys.executable).parent
# Settings that make a classify run take seconds: small images, two epochs, no TensorBoard.
FAST = ['data.img_size=32', 'training.epochs=2', 'output.tensorboard=false']


@pytest.fixture(scope='session')
def shapes(tmp_path_factory):
    "A small synthetic classify dataset: 12 training images per class, 4 each for val and test."
    return get_task('classify').synth(tmp_path_factory.mktemp('data')/'shapes', n=12, seed=0)


@pytest.fixture(scope='session')
def shapes_noval(tmp_path_factory):
    "The same kind of dataset without a val/ folder."
    import shutil
    root = get_task('classify').synth(tmp_path_factory.mktemp('data')/'noval', n=12, seed=1)
    shutil.rmtree(root/'val')
    return root


def cli(*args):
    "Run the CLI in this process; returns (exit status, stdout, stderr)."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: code = main([str(a) for a in args])
        except SystemExit as e: code = e.code
    return code, out.getvalue(), err.getvalue()


def run_cli(*args, env=None, timeout=600, **kw):
    "Run the `trainbench` console script as a new process."
    return subprocess.run([str(BIN/'trainbench'), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, **kw)


def sets(*overrides):
    "['a=1', 'b=2'] -> ['--set', 'a=1', '--set', 'b=2']"
    return [x for o in overrides for x in ('--set', o)]


def error_line(stderr):
    "The CLI's error line: the last line of stderr, which must start with 'error: '."
    lines = stderr.strip().splitlines()
    assert lines and lines[-1].startswith('error: '), stderr
    assert 'Traceback' not in stderr, stderr
    return lines[-1]


@pytest.fixture(scope='session')
def phototriage(tmp_path_factory):
    "A small synthetic PhotoTriage release: 40 series of 4 photos."
    from trainbench.readers.pairs import synth_phototriage
    return synth_phototriage(tmp_path_factory.mktemp('data')/'pt', n_series=40, photos=4, seed=0)

"Every script in benchmarks/ and tools/ compiles: a benchmark that no test touches can rot unseen (two did)."
import py_compile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted([*ROOT.glob('benchmarks/*.py'), *ROOT.glob('tools/*.py')])


@pytest.mark.parametrize('script', SCRIPTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_script_compiles(script, tmp_path):
    py_compile.compile(str(script), cfile=str(tmp_path/'x.pyc'), doraise=True)

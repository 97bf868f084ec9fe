"The experiment notebook's failure paths (its runs for every task under papermill: test_tasks.py)."
import json

import pytest

from trainbench.core import TrainbenchError
from trainbench.experiments import run_notebook


def test_failed_notebook_run_is_marked_failed_and_kept(tmp_path):
    with pytest.raises(TrainbenchError, match='does not exist'):
        run_notebook('classify/quick', {'data.root_dir': str(tmp_path/'nowhere')}, output_dir=tmp_path)
    run_dir, = tmp_path.glob('classify/quick/*')
    assert json.loads((run_dir/'summary.json').read_text())['status'] == 'failed'
    assert (run_dir/'train_classify.ipynb').exists() and (run_dir/'train.log').exists()


def test_bad_config_fails_before_a_kernel_starts(tmp_path):
    with pytest.raises(TrainbenchError, match='unknown key'):
        run_notebook('classify/quick', {'training.lrr': 1}, output_dir=tmp_path)
    assert not list(tmp_path.iterdir())

"The experiment notebook runs under papermill and lands in the run directory."
import json

import pytest

from trainbench.core import TrainbenchError
from trainbench.experiments import run_notebook


def test_papermill_run_keeps_the_executed_notebook(shapes, tmp_path):
    run_dir = run_notebook('classify/quick', {'data.root_dir': str(shapes), 'data.img_size': 32, 'training.epochs': 2},
                           output_dir=tmp_path)
    assert json.loads((run_dir/'summary.json').read_text())['status'] == 'completed'
    assert json.loads((run_dir/'results.json').read_text())['split'] == 'test'
    nb = json.loads((run_dir/'train_classify.ipynb').read_text())
    injected = [c for c in nb['cells'] if 'injected-parameters' in c['metadata'].get('tags', [])]
    assert injected and f"run_dir = \"{run_dir}\"" in ''.join(injected[0]['source'])
    code = [c for c in nb['cells'] if c['cell_type'] == 'code']
    assert all(c.get('execution_count') for c in code)                       # every cell ran
    assert any(o.get('output_type') == 'display_data' for c in code for o in c['outputs'])   # the curves were shown
    assert not list(run_dir.glob('.*.ipynb'))                                 # no temporary left behind


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


def test_rank_experiment_notebook(phototriage, tmp_path):
    run_dir = run_notebook('rank/quick', {'data.root_dir': str(phototriage), 'data.cache_dir': str(tmp_path/'cache'),
                                          'training.epochs': 2}, output_dir=tmp_path)
    assert json.loads((run_dir/'summary.json').read_text())['status'] == 'completed'
    nb = json.loads((run_dir/'train_rank.ipynb').read_text())
    assert all(c.get('execution_count') for c in nb['cells'] if c['cell_type'] == 'code')

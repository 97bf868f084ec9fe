"Bad input gets one clear line that names the problem, a non-zero exit, and a failed run is marked as such."
import json, shutil
from pathlib import Path

import pytest

from conftest import FAST, cli, error_line, run_cli, sets


def _copy(shapes, tmp_path):
    return Path(shutil.copytree(shapes, tmp_path/'data'))


def _train(root, tmp_path, *more):
    return cli('train', 'classify/quick', *sets(f'data.root_dir={root}', *FAST, *more), '--output-dir', tmp_path/'out')


def _failed_run(tmp_path):
    "The one run directory under tmp_path/out, which must be marked failed and keep its log."
    run_dir, = (tmp_path/'out').glob('classify/quick/*')
    summary = json.loads((run_dir/'summary.json').read_text())
    assert summary['status'] == 'failed', summary
    assert 'Run failed' in (run_dir/'train.log').read_text()
    assert not (run_dir/'results.json').exists()
    return summary


def test_missing_data_dir(tmp_path):
    code, _, err = _train(tmp_path/'nowhere', tmp_path)
    assert code != 0
    assert error_line(err) == (f'error: data.root_dir: {tmp_path/"nowhere"} does not exist '
                               f'(`trainbench synth classify {tmp_path/"nowhere"}` writes a synthetic dataset there)')
    assert 'does not exist' in _failed_run(tmp_path)['error']


def test_empty_class_folder(shapes, tmp_path):
    root = _copy(shapes, tmp_path)
    (root/'train'/'hexagon').mkdir()
    code, _, err = _train(root, tmp_path)
    assert code != 0 and error_line(err) == f'error: {root}/train/hexagon: empty class folder (no images)'
    _failed_run(tmp_path)


def test_class_in_val_but_not_in_train(shapes, tmp_path):
    root = _copy(shapes, tmp_path)
    shutil.copytree(root/'val'/'disc', root/'val'/'ellipse')
    code, _, err = _train(root, tmp_path)
    assert code != 0 and error_line(err) == f"error: {root}/val/ellipse: class 'ellipse' is in val/ but not in train/"
    _failed_run(tmp_path)


def test_unknown_key_names_file_line_and_closest_key(tmp_path):
    cfg = tmp_path/'my.yaml'
    cfg.write_text('task: classify\ndata:\n  root_dir: data/x\ntraining:\n  epochs: 3\n  learning_rate: 0.1\n')
    code, _, err = cli('train', cfg, '--output-dir', tmp_path/'out')
    assert code != 0
    assert error_line(err) == f"error: {cfg}:6: training.learning_rate: unknown key (did you mean 'lr'?)"
    assert not (tmp_path/'out').exists()     # nothing started, so no run directory


def test_unknown_key_from_set(tmp_path):
    code, _, err = cli('train', 'classify/quick', *sets('model.freeze_ration=0.5'))
    assert code != 0
    assert error_line(err) == "error: --set model.freeze_ration=0.5: model.freeze_ration: unknown key (did you mean 'freeze_ratio'?)"


def test_wrong_type(tmp_path):
    code, _, err = cli('train', 'classify/quick', *sets('training.epochs=ten'))
    assert code != 0
    assert error_line(err).startswith("error: --set training.epochs=ten: training.epochs: input should be a valid integer")


def test_negative_lr(tmp_path):
    code, _, err = cli('train', 'classify/quick', *sets('training.lr=-1e-3'))
    assert code != 0
    assert error_line(err) == "error: --set training.lr=-1e-3: training.lr: input should be greater than 0 (got '-1e-3')"


def test_freeze_ratio_outside_0_1(tmp_path):
    cfg = tmp_path/'f.yaml'
    cfg.write_text('task: classify\nmodel:\n  freeze_ratio: 1.5\n')
    code, _, err = cli('train', cfg)
    assert code != 0
    assert error_line(err) == f"error: {cfg}:3: model.freeze_ratio: input should be less than or equal to 1 (got 1.5)"


@pytest.mark.parametrize('damage', ['truncated', 'not_an_image'])
def test_corrupt_image_is_named_and_fails(shapes, tmp_path, damage):
    root = _copy(shapes, tmp_path)
    bad = root/'train'/'square'/'square_0003.jpg'
    data = bad.read_bytes()
    bad.write_bytes(data[:len(data)//2] if damage == 'truncated' else b'this is not a jpeg')
    code, _, err = _train(root, tmp_path)
    assert code != 0 and error_line(err).startswith(f'error: {bad}: corrupt or truncated image')
    _failed_run(tmp_path)


def test_corrupt_image_skipped_with_a_count_when_asked(shapes, tmp_path):
    root = _copy(shapes, tmp_path)
    bad = root/'val'/'disc'/'disc_0001.jpg'
    bad.write_bytes(bad.read_bytes()[:200])
    code, out, err = _train(root, tmp_path, 'data.on_corrupt=skip')
    assert code == 0, err
    assert f'Skipping corrupt or truncated image: {bad}' in err and 'Skipped 1 corrupt or truncated image(s) of 16' in err
    assert 'Validation samples: 15' in err


def test_unknown_template_and_task(tmp_path):
    code, _, err = cli('train', 'classify/mobilenet')
    assert code != 0 and "did you mean 'classify/mobilenet_v3_small'" in error_line(err)
    cfg = tmp_path/'t.yaml'; cfg.write_text('task: clasify\n')
    code, _, err = cli('train', cfg)
    assert code != 0 and "task: unknown task 'clasify' (did you mean 'classify'?)" in error_line(err)


def test_invalid_yaml_names_the_line(tmp_path):
    cfg = tmp_path/'broken.yaml'
    cfg.write_text('task: classify\ntraining:\n  lr: [1e-3\n  epochs: 2\n')
    code, _, err = cli('train', cfg)
    assert code != 0 and error_line(err).startswith(f'error: {cfg}:')
    assert 'invalid YAML' in err


def test_resume_of_something_that_is_not_a_run(tmp_path):
    code, _, err = cli('train', '--resume', tmp_path)
    assert code != 0 and error_line(err) == f'error: {tmp_path}: not a run directory (no config.yaml)'


def test_evaluate_missing_split_and_bad_usage(tmp_path):
    code, _, err = cli('evaluate', tmp_path/'nope')
    assert code != 0 and 'not a run directory' in error_line(err)
    code, _, err = cli('train', 'classify/quick', '--quick-experiment', 'half')
    assert code == 2 and err.count('\n') == 1 and error_line(err).startswith('error: argument --quick-experiment')


def test_as_a_process_exit_status_and_one_line(tmp_path):
    "The real console script: non-zero status, one line on stderr, no traceback."
    res = run_cli('train', 'classify/quick', *sets('training.lrr=1e-3'))
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == ["error: --set training.lrr=1e-3: training.lrr: unknown key (did you mean 'lr'?)"]
    assert res.stdout == ''

"The rank task: a new user's path from the CLI, the feature cache, the pairs CSV, end-to-end mode and bad input."
import json, shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from conftest import SHARED, cli, data_sets, error_line, last_line, run_cli, sets
from trainbench.config import load_config
from trainbench.task import get_task
from trainbench.learner import train
from trainbench.readers.pairs import phototriage_image

FAST = ['training.epochs=3', 'output.tensorboard=false']


@pytest.fixture(scope='module')
def quick_rank(task_run, tmp_path_factory):
    "The session's rank/quick run (a cold feature cache), and the same run again (a warm cache)."
    run_dir, err = task_run('rank')
    cfg = load_config(run_dir/'config.yaml')
    code, out, warm = cli('train', 'rank/quick', *sets(*data_sets('rank', cfg.data.root_dir, cfg.data.cache_dir), *SHARED['rank']),
                          '--output-dir', tmp_path_factory.mktemp('warm'))
    assert code == 0, warm
    return Path(cfg.data.cache_dir), (run_dir, err), (last_line(out), warm)


def test_frozen_multifeature_learns(quick_rank):
    _, (run_dir, _), _ = quick_rank
    results = json.loads((run_dir/'results.json').read_text())
    summary = json.loads((run_dir/'summary.json').read_text())
    assert results['split'] == 'test' and results['accuracy'] >= 0.85, results
    assert summary['best_metrics']['valid_accuracy']['value'] >= 0.85
    assert {'accuracy_high_agreement', 'series_top1', 'n_pairs', 'n_series'} <= set(results)
    assert results['n_series'] >= 3 and 0 <= results['series_top1'] <= 1   # 40 synthetic series: 3 in test
    preds = pd.read_csv(run_dir/'predictions.csv')
    assert len(preds) == results['n_pairs'] and {'score1', 'score2', 'prob', 'correct'} <= set(preds.columns)
    assert (preds.correct == ((preds.score1 > preds.score2) == (preds.label == 1))).all()


def test_warm_cache_extracts_nothing(quick_rank):
    cache, (cold_dir, cold_err), (warm_dir, warm_err) = quick_rank
    assert cold_err.count('[features] Extracting') == 3              # one per extractor: CLIP, CNN, IQA
    assert '[features] Extracting' not in warm_err
    a = json.loads((cold_dir/'metrics.json').read_text())
    b = json.loads((warm_dir/'metrics.json').read_text())
    assert a == b                                                     # cached features train the same model
    assert len(list((cache/'features').glob('*.npy'))) == 3


def test_changed_image_is_reextracted_and_cache_false_extracts_all(phototriage, tmp_path):
    root = Path(shutil.copytree(phototriage, tmp_path/'pt'))
    over = {'data.root_dir': str(root), 'data.cache_dir': str(tmp_path/'cache'), 'training.epochs': 1, 'output.tensorboard': False}
    train('rank/quick', over, output_dir=tmp_path/'out')
    img = phototriage_image(root, 3, 2)
    img.write_bytes(phototriage_image(root, 3, 1).read_bytes())       # a photo edited (now a copy of another)
    code, _, err = cli('train', 'rank/quick', *sets(*[f'{k}={v}' for k, v in over.items()]), '--output-dir', tmp_path/'out')
    assert code == 0, err
    assert '[features] Extracting' not in err                         # its new content is already cached: nothing to extract
    Image.open(phototriage_image(root, 3, 1)).save(img, quality=40)  # a truly new content
    code, _, err = cli('train', 'rank/quick', *sets(*[f'{k}={v}' for k, v in over.items()]), '--output-dir', tmp_path/'out')
    assert code == 0, err
    assert err.count('features of 1 images (') == 3, err             # only it, for each of the three extractors
    code, _, err = cli('train', 'rank/quick', *sets(*[f'{k}={v}' for k, v in over.items()], 'features.cache=false'),
                       '--output-dir', tmp_path/'out')
    assert code == 0 and err.count('features of 200 images (0 cached)') == 3, err


def test_splits_are_by_series(phototriage):
    cfg = get_task('rank').Config(data={'root_dir': phototriage, 'cache_dir': phototriage/'cache'},
                                  features={'clip': False, 'cnn': False, 'iqa': True})
    data = get_task('rank').data(cfg)
    series = {s: set(df.series) for s, df in data.extra['pairs'].items()}
    assert series['train'] and series['val'] and series['test']
    assert not series['train'] & series['val'] and not series['train'] & series['test'] and not series['val'] & series['test']
    data2 = get_task('rank').data(cfg.model_copy(update={'seed': 1}))
    assert {s: set(df.series) for s, df in data2.extra['pairs'].items()} != series     # the carved split is seeded


def test_pairs_csv_with_reviewer_counts(phototriage, tmp_path):
    "The same pairs as a CSV: relative paths, agreement and label, reviewer counts and fixed splits."
    from trainbench.readers.pairs import read_pairs
    rows = []
    for split, df in read_pairs(phototriage, val_split=0.2, test_split=0.2, seed=0).items():
        for r in df.itertuples():
            rows.append(dict(series_id=r.series, image1=Path(r.image1).relative_to(phototriage), image2=Path(r.image2).relative_to(phototriage),
                             agreement=r.agreement, label=r.label, num_reviewers=1 if r.series % 5 == 0 else 6, split=split))
    pd.DataFrame(rows).to_csv(tmp_path/'pairs.csv', index=False)
    shutil.copytree(phototriage/'train_val_imgs', tmp_path/'train_val_imgs')
    run = train('rank/quick', {'data.root_dir': str(tmp_path), 'data.cache_dir': str(tmp_path/'cache'), 'training.epochs': 2,
                               'output.tensorboard': False, 'features.clip': False, 'features.cnn': False},
                output_dir=tmp_path/'out')
    pairs = pd.read_csv(run.dir/'predictions.csv')
    assert run.summary['status'] == 'completed'
    assert (pairs.series % 5 != 0).all()          # pairs seen by one reviewer were filtered out (min_reviewers=2)
    assert (pairs.agreement >= 0.7).all()


def test_margin_loss_and_export(phototriage, tmp_path):
    over = {'data.root_dir': str(phototriage), 'data.cache_dir': str(tmp_path/'cache'), 'training.loss': 'margin',
            'training.epochs': 2, 'output.tensorboard': False}
    run = train('rank/quick', over, output_dir=tmp_path)
    assert run.summary['status'] == 'completed'
    for fmt in ('onnx', 'torchscript'):
        code, out, err = cli('export', run.dir, '--format', fmt)
        assert code == 0, err


def test_e2e_learns_at_a_tiny_size(tmp_path):
    """rank/e2e_resnet50 from scratch on 32-px photos, with a ResNet-18 in place of its ResNet-50 (the same e2e path at a
    fifth of the cost): images go through the CNN every batch, and it learns. The template's own model is built below."""
    from trainbench.readers.pairs import synth_phototriage
    root = synth_phototriage(tmp_path/'pt32', n_series=160, photos=4, seed=0, size=32)
    res = run_cli('train', 'rank/e2e_resnet50', *sets(f'data.root_dir={root}', 'model.pretrained=false', 'model.name=resnet18',
                                                      'data.img_size=32', 'training.lr=1e-3', 'training.epochs=6',
                                                      'output.tensorboard=false'),
                  '--output-dir', tmp_path)
    assert res.returncode == 0, res.stderr
    run_dir = Path(res.stdout.strip().splitlines()[-1])
    summary = json.loads((run_dir/'summary.json').read_text())
    assert summary['best_metrics']['valid_accuracy']['value'] > 0.7, summary['best_metrics']
    assert 'Model: e2e ranker (resnet18), Parameters: 11.' in res.stderr


def test_e2e_resnet50_template_builds_its_model():
    "The template's ResNet-50 ranker, built as a run would build it (random weights: the weight loading has its own tests)."
    from trainbench.models import describe_params
    from trainbench.tasks.rank import e2e_ranker
    cfg = load_config('rank/e2e_resnet50', {'model.pretrained': False})
    line = describe_params('e2e ranker (resnet50)', e2e_ranker(cfg))
    assert line == 'Model: e2e ranker (resnet50), Parameters: 24.7M (24.7M trainable)', line


def _pt(phototriage, tmp_path):
    return Path(shutil.copytree(phototriage, tmp_path/'pt', ignore=shutil.ignore_patterns('cache')))


def _rank(root, tmp_path):
    return cli('train', 'rank/quick', *sets(f'data.root_dir={root}', f'data.cache_dir={tmp_path/"cache"}', *FAST),
               '--output-dir', tmp_path/'out')


def test_pairlist_line_with_wrong_field_count(phototriage, tmp_path):
    root = _pt(phototriage, tmp_path)
    lines = (root/'train_pairlist.txt').read_text().splitlines()
    lines[4] = ' '.join(lines[4].split()[:5])
    (root/'train_pairlist.txt').write_text('\n'.join(lines) + '\n')
    code, _, err = _rank(root, tmp_path)
    assert code != 0 and error_line(err) == (f'error: {root}/train_pairlist.txt:5: expected 6 fields (SERIES_ID PHOTO1_IND '
                                             'PHOTO2_IND PREF_RATIO_1_OVER_2 RANK1 RANK2), got 5')


def test_ratio_outside_0_1(phototriage, tmp_path):
    root = _pt(phototriage, tmp_path)
    lines = (root/'val_pairlist.txt').read_text().splitlines()
    f = lines[2].split(); f[3] = '1.7'; lines[2] = ' '.join(f)
    (root/'val_pairlist.txt').write_text('\n'.join(lines) + '\n')
    code, _, err = _rank(root, tmp_path)
    assert code != 0 and error_line(err) == f'error: {root}/val_pairlist.txt:3: PREF_RATIO_1_OVER_2 is 1.7, outside [0, 1]'


def test_missing_image_is_named(phototriage, tmp_path):
    root = _pt(phototriage, tmp_path)
    gone = phototriage_image(root, 7, 3)
    gone.unlink()
    code, _, err = _rank(root, tmp_path)
    assert code != 0 and error_line(err).startswith(f'error: {gone}: image referenced at {root}/')
    assert 'does not exist' in error_line(err)


def test_series_in_two_splits(phototriage, tmp_path):
    root = _pt(phototriage, tmp_path)
    train_line = (root/'train_pairlist.txt').read_text().splitlines()[0]
    with open(root/'val_pairlist.txt', 'a') as f: f.write(train_line + '\n')
    code, _, err = _rank(root, tmp_path)
    series = train_line.split()[0]
    assert code != 0 and f'error: series {series} is in both train and val' in error_line(err)


def test_clip_weights_missing_offline(phototriage, tmp_path, monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)   # read at import: the variable alone is too late
    monkeypatch.setenv('HF_HOME', str(tmp_path/'hf'))
    code, _, err = cli('train', 'rank/frozen_clip', *sets(f'data.root_dir={phototriage}', f'data.cache_dir={tmp_path/"cache"}'),
                       '--output-dir', tmp_path/'out')
    line = error_line(err)
    assert code != 0 and "features.clip_pretrained: weights 'openai' for ViT-B-32 are not in the open_clip cache" in line
    assert 'set features.clip_pretrained to a local checkpoint file' in line

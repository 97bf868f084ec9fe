"The iqa task: a run from the CLI, the optimizer fault of the reference, splits, formats, predict, and bad input."
import json, logging, shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import cli, error_line, sets
from trainbench.task import get_task
from trainbench.runs import load_checkpoint

@pytest.fixture(scope='module')
def iqa_run(task_run):
    "The session's iqa/quick run: 10 epochs on the tiny synthetic set, every epoch kept: the schedule's three phases."
    return task_run('iqa')


def test_run_directory(iqa_run):
    run_dir, _ = iqa_run
    assert run_dir.name == 'lr1e-3_bs64_ep10_val0.1_seed42'
    epochs = json.loads((run_dir/'metrics.json').read_text())['epochs']
    assert [e['epoch'] for e in epochs] == list(range(1, 11))
    assert all({'train_loss', 'train_srcc', 'valid_srcc', 'valid_plcc'} <= set(e) for e in epochs)
    res = json.loads((run_dir/'results.json').read_text())
    assert res['split'] == 'test' and {'srcc', 'plcc', 'krcc'} <= set(res) and res['n'] == 35
    preds = pd.read_csv(run_dir/'predictions.csv')
    assert len(preds) == 35 and {'image', 'ref', 'score', 'prediction'} <= set(preds.columns)
    assert all((run_dir/f'epoch_{i}.pth').exists() for i in range(1, 11))


def test_hyper_network_trains_in_every_epoch(iqa_run):
    "The reference lost the hyper network from its optimizer after epoch 1: here its weights move in every epoch."
    run_dir, _ = iqa_run
    ckpts = [load_checkpoint(run_dir/f'epoch_{i}.pth') for i in range(1, 11)]
    model = get_task('iqa').model(get_task('iqa').Config(**ckpts[0]['config']), None)
    hyper = {n for n, p in model.named_parameters() if any(p is q for q in model.hyper_parameters())}
    assert hyper and all(n.startswith(('hyper.', 'weight_convs.', 'bias_fcs.', 'last_')) for n in hyper)
    for a, b in zip(ckpts, ckpts[1:]):
        moved = {n for n in hyper if not torch.equal(a['model'][n], b['model'][n])}
        assert moved == hyper, f"epoch {b['epoch']}: hyper-network weights that did not train: {sorted(hyper - moved)[:3]}"
    # the optimizer has both groups, with every parameter, at the schedule's rates (epoch 10: lr/10, ratio 1)
    opt = ckpts[-1]['optimizer']
    assert [len(g['params']) for g in opt['param_groups']] == [len(list(model.parameters())) - len(hyper), len(hyper)]
    assert len(opt['state']) == len(list(model.parameters()))
    lrs = [[g['lr'] for g in c['optimizer']['param_groups']] for c in ckpts]
    assert np.allclose(lrs[0], [1e-3, 1e-3]) and np.allclose(lrs[7], [1e-4, 1e-4]) and np.allclose(lrs[9], [1e-4, 1e-4])


def test_reference_optimizer_fault_is_caught():
    "Rebuilding the optimizer from a consumed `filter`, as the reference did, fails the check the schedule runs every epoch."
    from trainbench.core import TrainbenchError
    from trainbench.tasks.iqa import HyperNet, check_optimizer_params
    m = HyperNet(4, 8, 16, 8, 4, 4, 2, 1, 'resnet18', 8)
    backbone = {id(p) for p in [*m.backbone.parameters(), *m.lda.parameters()]}
    hyper = filter(lambda p: id(p) not in backbone, m.parameters())
    groups = lambda: [{'params': hyper, 'lr': 1e-3}, {'params': [*m.backbone.parameters(), *m.lda.parameters()], 'lr': 1e-4}]
    check_optimizer_params(torch.optim.Adam(groups()), m)
    with pytest.raises(TrainbenchError, match='not in the optimizer'): check_optimizer_params(torch.optim.Adam(groups()), m)


def test_lr_ratio_group_rates(kadid, tmp_path):
    "The hyper network trains at lr * lr_ratio until epoch 8, and at lr/10 from epoch 9."
    from trainbench.tasks.iqa import hyperiqa_lrs
    assert hyperiqa_lrs(6, 2e-5, 10) == (2e-5, 2e-4)
    assert np.allclose(hyperiqa_lrs(7, 2e-5, 10), (2e-6, 2e-5)) and np.allclose(hyperiqa_lrs(9, 2e-5, 10), (2e-6, 2e-6))
    code, out, err = cli('train', 'iqa/quick', *sets(f'data.root_dir={kadid}', 'training.epochs=1', 'training.lr_ratio=10',
                                                     'data.train_patch_num=1', 'data.val_patch_num=1', 'output.tensorboard=false',
                                                     'data.quick_experiment=0.5'), '--output-dir', tmp_path)
    assert code == 0, err
    opt = load_checkpoint(Path(out.strip().splitlines()[-1])/'final_model.pth')['optimizer']
    assert np.allclose([g['lr'] for g in opt['param_groups']], [1e-3, 1e-2])


def test_best_model_is_chosen_on_val(iqa_run):
    run_dir, _ = iqa_run
    epochs = json.loads((run_dir/'metrics.json').read_text())['epochs']
    best = max(epochs, key=lambda e: e['valid_srcc'])['epoch']
    assert load_checkpoint(run_dir/'best_model.pth')['epoch'] == best
    assert json.loads((run_dir/'summary.json').read_text())['best_metrics']['valid_srcc']['epoch'] == best


def test_paper_sizes():
    "The default HyperNet is the paper's: ResNet-50, LDA 16/16/16/176, hyper convs 2048-1024-512-112, target 224-112-56-28-14-1."
    from trainbench.tasks.iqa import HyperNet, part_counts
    m = HyperNet().eval()
    assert part_counts(m) == {'backbone': 23_508_032, 'lda': 475_360, 'hyper network': 3_391_977, 'total': 27_375_369}
    assert [c.out_channels for c in m.weight_convs] == [512, 128, 32, 8]
    assert [f.out_features for f in m.bias_fcs] == [112, 56, 28, 14] and m.last_weight.out_features == 14
    with torch.no_grad(): assert m(torch.randn(2, 3, 224, 224)).shape == (2,)
    cfg = get_task('iqa').Config()
    assert (cfg.model.name, cfg.model.width, cfg.data.patch_size, cfg.training.lr_ratio) == ('resnet50', 64, 224, 10)


def test_predict_and_evaluate_cli(iqa_run, kadid):
    run_dir, _ = iqa_run
    imgs = [kadid/'images'/'R01_01_01.png', kadid/'images'/'R01_04_05.png']
    code, out, err = cli('predict', run_dir, *imgs)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 2 and all(l.startswith(str(i)) and '\tscore=' in l for l, i in zip(lines, imgs))
    code, out, err = cli('evaluate', run_dir, '--split', 'val')
    assert code == 0 and json.loads(out.strip().splitlines()[-1])['split'] == 'val', err
    code, _, err = cli('predict', run_dir, kadid/'images'/'nope.png')
    assert code != 0 and error_line(err) == f"error: predict: image not found: {kadid/'images'/'nope.png'}"


def test_kadid_splits_are_reference_wise(kadid):
    task = get_task('iqa')
    cfg = task.Config(data={'root_dir': kadid, 'patch_size': 64, 'val_split': 0.2, 'preload': False})
    tables = task.data(cfg).extra['tables']
    refs = {s: set(t.ref) for s, t in tables.items()}
    assert refs['train'] and refs['val'] and refs['test']
    assert not refs['train'] & refs['val'] and not refs['train'] & refs['test'] and not refs['val'] & refs['test']
    assert all(len(t) == 35*len(refs[s]) for s, t in tables.items())      # each reference's 35 versions together
    other = task.data(cfg.model_copy(update={'seed': 3})).extra['tables']
    assert {s: set(t.ref) for s, t in other.items()} != refs                # seeded


def test_json_lists(kadid):
    task = get_task('iqa')
    cfg = task.Config(data={'root_dir': kadid, 'format': 'json', 'test_json': 'test.json', 'patch_size': 64, 'preload': False})
    tables = task.data(cfg).extra['tables']
    assert len(tables['test']) == len(json.loads((kadid/'test.json').read_text()))
    assert len(tables['train']) + len(tables['val']) == len(json.loads((kadid/'train.json').read_text()))


def test_koniq_official_split_and_resize(tmp_path):
    from trainbench.readers.iqa import KONIQ_CSV, KONIQ_SETS
    (tmp_path/'1024x768').mkdir()
    names = [f'{i}.jpg' for i in range(8)]
    for i, n in enumerate(names): Image.new('RGB', (1024, 768), (30*i, 0, 0)).save(tmp_path/'1024x768'/n)
    pd.DataFrame({'image_name': names, 'c1': 0, 'c2': 0, 'c3': 0, 'c4': 0, 'c5': 0, 'c_total': 5, 'MOS': np.linspace(1, 5, 8),
                  'SD': 0.5, 'MOS_zscore': np.linspace(0, 100, 8)}).to_csv(tmp_path/KONIQ_CSV, index=False)
    pd.DataFrame({'image_name': names, 'set': ['training']*4 + ['validation']*2 + ['test']*2}).to_csv(tmp_path/KONIQ_SETS, index=False)
    task = get_task('iqa')
    cfg = task.Config(data={'root_dir': tmp_path, 'resize': [512, 384], 'patch_size': 64})
    data = task.data(cfg)
    assert {s: len(t) for s, t in data.extra['tables'].items()} == {'train': 4, 'val': 2, 'test': 2}
    assert np.allclose(data.extra['tables']['test'].score, [100*6/7, 100.])
    crops, score = data.eval_dls['test'].dataset[0]
    assert data.eval_dls['test'].dataset.images[0].shape == (3, 384, 512)     # width 512, height 384: not the reference's swap


def _copy(kadid, tmp_path):
    return Path(shutil.copytree(kadid, tmp_path/'kadid'))


def _train(root, tmp_path, *extra):
    return cli('train', 'iqa/quick', *sets(f'data.root_dir={root}', 'training.epochs=1', 'output.tensorboard=false', *extra),
               '--output-dir', tmp_path/'out')


def test_missing_image_is_named(kadid, tmp_path):
    root = _copy(kadid, tmp_path)
    (root/'images'/'R03_02_04.png').unlink()
    code, _, err = _train(root, tmp_path)
    row = pd.read_csv(root/'dmos.csv').dist_img.tolist().index('R03_02_04.png') + 2
    assert code != 0 and error_line(err) == f"error: {root/'images'/'R03_02_04.png'}: image listed at {root/'dmos.csv'}:{row} does not exist"


@pytest.mark.parametrize('bad', ['NaN', 'good'])
def test_bad_score_is_named_with_its_row(kadid, tmp_path, bad):
    root = _copy(kadid, tmp_path)
    df = pd.read_csv(root/'dmos.csv', dtype=str)
    df.loc[10, 'dmos'] = bad
    df.to_csv(root/'dmos.csv', index=False)
    code, _, err = _train(root, tmp_path)
    assert code != 0 and error_line(err).startswith(f"error: {root/'dmos.csv'}:12: dmos is ")
    assert error_line(err).endswith('not a number')


def test_small_image_is_upscaled_with_a_warning(kadid, tmp_path):
    root = _copy(kadid, tmp_path)
    Image.open(root/'images'/'R02_01_01.png').resize((40, 30)).save(root/'images'/'R02_01_01.png')
    code, out, err = _train(root, tmp_path, 'data.train_patch_num=1', 'data.val_patch_num=1')
    assert code == 0, err
    assert f"{root/'images'/'R02_01_01.png'}: 40x30 is smaller than the 64-px patch; upscaled to 86x64" in err

"The multilabel task: the two-phase run from the CLI, freezing and discriminative LRs, the memory bank in checkpoints, resume, the ChestX-ray14 format and bad input."
import json, shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import TINY as CONFTEST_TINY, cli, error_line, sets
from trainbench.readers.chestxray import LABELS, read_chestxray, read_list, synth_chestxray
from trainbench.task import get_task

TINY = CONFTEST_TINY['multilabel']   # a run in seconds: 32-px films, 2 phase-1 epochs (one frozen), 1 phase-2 epoch, a small bank


@pytest.fixture(scope='module')
def run(task_run):
    "The session's tiny two-phase run through the CLI, with the LR finder on: the run directory and its stderr."
    return task_run('multilabel')


def test_two_phase_run_keeps_both_phases(run):
    run_dir, err = run
    results = json.loads((run_dir/'results.json').read_text())
    assert results['split'] == 'test' and set(results['auc']) == set(LABELS)
    assert 0 <= results['mean_auc'] <= 1
    for f in ('phase1_model.pth', 'phase2_model.pth', 'phase1_val_predictions.csv', 'phase2_val_predictions.csv', 'phase1_lr_find.json'):
        assert (run_dir/f).exists(), f
    assert [r['epoch'] for r in json.loads((run_dir/'metrics.json').read_text())['epochs']] == [1, 2, 3]
    # phase 1's LR is the finder's recommended mark (the valley, unless it lay past the loss minimum), as phase1_lr_find.json keeps it
    found = json.loads((run_dir/'phase1_lr_find.json').read_text())
    name = 'valley' if 'valley' in found['suggestions'] else next(iter(found['suggestions']))
    assert found['lr'] == found['suggestions'][name] and f'LR finder ({name}): phase1 lr = ' in err, err
    assert 'Phase 2: ' in err and 'ASL loss, memory momentum 0.9999' in err
    assert 'ROC AUC Labels:' in err and 'Mean AUC Score:' in err        # the per-class table
    preds = pd.read_csv(run_dir/'predictions.csv')
    val = pd.read_csv(run_dir/'phase2_val_predictions.csv')
    assert {f'prob_{l}' for l in LABELS} <= set(preds.columns) and len(val) > 0
    assert torch.load(run_dir/'phase1_model.pth', weights_only=True)['epoch'] == 2


def test_memory_bank_state_travels_in_checkpoints(run):
    from trainbench.learner import load_model
    run_dir, _ = run
    ckpt = torch.load(run_dir/'best_model.pth', weights_only=True)
    assert ckpt['model']['memory.valid'].sum() > 0 and ckpt['model']['memory.seen'] > 0
    _, _, model, _ = load_model(run_dir)
    assert torch.equal(model.memory.bank, ckpt['model']['memory.bank'])
    assert torch.equal(model.memory.mean, ckpt['model']['memory.mean'])


def test_predict_gives_every_label(run, cxr):
    run_dir, _ = run
    img = next((cxr/'images_001'/'images').iterdir())
    code, out, err = cli('predict', run_dir, img)
    assert code == 0, err
    assert out.strip().startswith(str(img)) and 'findings=' in out
    from trainbench.learner import predict
    row, = predict(run_dir, [img])
    assert len([k for k in row if k.startswith('prob_')]) == 14 and all(0 <= row[f'prob_{l}'] <= 1 for l in LABELS)
    before = json.loads((run_dir/'results.json').read_text())
    code, _, err = cli('evaluate', run_dir)                                    # the best model again, rebuilt from the run
    assert code == 0, err
    assert json.loads((run_dir/'results.json').read_text())['mean_auc'] == pytest.approx(before['mean_auc'], abs=1e-6)


def test_freezing_freezes_and_groups_get_their_lrs():
    "Frozen epochs leave every backbone parameter as it was (BN weights too); slice(2e-5, 8e-5) gives two LRs."
    from fastai.callback.core import Callback
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    from trainbench.learner import build_learner
    from trainbench.learner import fit_stage, start_stage
    from trainbench.task import Stage, TaskData
    from trainbench.tasks.multilabel import MultilabelConfig, phase_stages
    task = get_task('multilabel')
    cfg = MultilabelConfig(model={'name': 'resnet18', 'pretrained': False}, memory={'bank_size': 8},
                           training={'mixed_precision': 'no'}, output={'tensorboard': False})
    ds = [(torch.randn(3, 32, 32), torch.randint(0, 2, (14,)).float()) for _ in range(32)]
    dls = DataLoaders(DataLoader(ds, bs=16, shuffle=True), DataLoader(ds, bs=16))
    learn = build_learner(task, cfg, TaskData(dls), task.model(cfg, None), path='.')
    learn.train_bn = False
    class LRs(Callback):
        def before_fit(self): self.lrs = []
        def after_batch(self): self.lrs.append([h['lr'] for h in self.opt.hypers])
    rec = LRs()
    frozen = phase_stages(cfg.phase1.model_copy(update={'freeze_epochs': 1, 'epochs': 1}), 'phase1', None, 'Phase 1', 1e-2)[0]
    start_stage(learn, frozen)                                                  # the pipeline's freeze, as in a run
    before = {k: p.detach().clone() for k, p in learn.model.named_parameters()}
    with learn.no_logging(), learn.no_bar(): fit_stage(learn, frozen, [rec])
    moved = {k for k, p in learn.model.named_parameters() if not torch.equal(before[k], p)}
    assert not {k for k in moved if k.startswith('backbone.')}, 'frozen backbone parameters changed'
    assert any(k.startswith('backbone.') and 'bn' in k for k in before)           # batch-norm weights were among them
    assert {k for k in before if k.startswith('head.')} <= moved
    phase2 = Stage(1, slice(2e-5, 8e-5), phase='phase2', frozen=False)
    start_stage(learn, phase2)
    with learn.no_logging(), learn.no_bar(): fit_stage(learn, phase2, [rec])
    lrs = torch.tensor(rec.lrs, dtype=torch.float64)                           # (batches, groups): one-cycle, scaled per group
    assert torch.allclose(lrs[:, 1]/lrs[:, 0], torch.full((len(lrs),), 4., dtype=torch.float64))   # 8e-5 / 2e-5 at every step
    assert lrs[:, 1].max() <= 8e-5 + 1e-12
    assert len({k for k, p in learn.model.named_parameters() if k.startswith('backbone.') and not torch.equal(before[k], p)}) > 0


def test_resume_into_phase_2(cxr, tmp_path):
    "A phase-1-only run, resumed with a phase 2: phase 2 starts from phase 1's model and numbers on; no-memory baseline."
    from trainbench.learner import train
    over = {'data.root_dir': str(cxr), **dict(o.split('=', 1) for o in TINY), 'phase2.epochs': 0}
    first = train('multilabel/quick_baseline', over, output_dir=tmp_path)
    assert first.summary['status'] == 'completed' and not (first.dir/'phase2_model.pth').exists()
    assert first.learn.model.memory is None
    resumed = train(resume=first.dir, overrides={'phase2.epochs': 1})
    recs = json.loads((first.dir/'metrics.json').read_text())['epochs']
    assert [r['epoch'] for r in recs] == [1, 2, 3]
    assert (first.dir/'phase2_model.pth').exists() and resumed.summary['status'] == 'completed'
    assert 'mean_auc' in resumed.results
    # the best of phase 1 carries into the resumed phase 2: best_model.pth is the best epoch of the whole run
    best = resumed.summary['best_metrics']['valid_auc']['epoch']
    assert torch.load(first.dir/'best_model.pth', weights_only=True)['epoch'] == best


def test_splits_are_patient_wise_and_lists_keep_their_first_line(cxr):
    splits = read_chestxray(cxr, 0.2, seed=0)
    pats = {s: set(df.patient) for s, df in splits.items()}
    assert not pats['train'] & pats['val'] and not pats['train'] & pats['test'] and not pats['val'] & pats['test']
    first = (cxr/'train_val_list.txt').read_text().splitlines()[0]
    assert first in set(splits['train'].image) | set(splits['val'].image)
    assert len(splits['train']) + len(splits['val']) == len(read_list(cxr/'train_val_list.txt'))
    assert read_chestxray(cxr, 0.2, seed=0)['val'].image.tolist() == splits['val'].image.tolist()   # seeded
    cfg = get_task('multilabel').Config(data={'root_dir': cxr, 'val_pct': 0.2, 'img_size': 32}, model={'pretrained': False})
    data = get_task('multilabel').data(cfg)
    phases = data.extra['phases']
    assert phases[1].valid.dataset is phases[2].valid.dataset                 # one validation split for both phases
    assert all(y.sum() > 0 for y in phases[1].train.dataset.targets)          # phase 1: abnormal films only
    assert len(phases[2].train.dataset) > len(phases[1].train.dataset)


def _copy(cxr, tmp_path):
    return Path(shutil.copytree(cxr, tmp_path/'cxr'))


def _train(root, tmp_path):
    return cli('train', 'multilabel/quick', *sets(f'data.root_dir={root}', *TINY), '--output-dir', tmp_path/'out')


def test_csv_missing_a_column_names_it(cxr, tmp_path):
    root = _copy(cxr, tmp_path)
    csv = root/'Data_Entry_2017.csv'
    csv.write_text(csv.read_text().replace('Patient ID', 'Patient'))
    code, _, err = _train(root, tmp_path)
    assert code != 0 and error_line(err).startswith(f"error: {csv}: missing column 'Patient ID'")


def test_unknown_label_names_the_line(cxr, tmp_path):
    root = _copy(cxr, tmp_path)
    csv = root/'Data_Entry_2017.csv'
    lines = csv.read_text().splitlines()
    f = lines[3].split(','); f[1] = 'Effusion|Covid'; lines[3] = ','.join(f)
    csv.write_text('\n'.join(lines) + '\n')
    code, _, err = _train(root, tmp_path)
    assert code != 0 and error_line(err).startswith(f"error: {csv}:4: unknown label 'Covid' in Finding Labels")


def test_missing_image_is_named(cxr, tmp_path):
    root = _copy(cxr, tmp_path)
    name = read_list(root/'test_list.txt')[2][0]
    next(root.glob(f'images_*/images/{name}')).unlink()
    code, _, err = _train(root, tmp_path)
    assert code != 0 and error_line(err) == f"error: {root/'test_list.txt'}:3: image {name} not found under images/ or images_0NN/images/"


def test_listed_image_absent_from_csv(cxr, tmp_path):
    root = _copy(cxr, tmp_path)
    lst = root/'train_val_list.txt'
    lst.write_text('99999999_000.png\n' + lst.read_text())
    code, _, err = _train(root, tmp_path)
    assert code != 0 and error_line(err) == f'error: {lst}:1: 99999999_000.png is not in Data_Entry_2017.csv'


def test_bad_config_values(cxr):
    code, _, err = cli('train', 'multilabel/quick', *sets('memory.update_strategy=random'))
    assert code != 0 and 'memory.update_strategy' in error_line(err)
    code, _, err = cli('train', 'multilabel/quick', *sets('phase1.freeze_epochs=30'))
    assert code != 0 and 'phase1.freeze_epochs (30) is more than phase1.epochs' in error_line(err)


def test_every_template_loads():
    from trainbench.config import list_templates, load_config
    names = [n for n in list_templates() if n.startswith('multilabel/')]
    expected = {'baseline_effv2s', 'baseline_resnet50', 'memory_rarity_effv2s', 'memory_rarity_effv2m', 'memory_rarity_resnet50',
                'memory_rarity_densenet121', 'memory_diversity_effv2s', 'memory_hybrid_effv2s', 'memory_statistical_effv2s',
                'memory_fifo_effv2s', 'ablation_no_normalize', 'ablation_topk1', 'ablation_topk5', 'ablation_bank256',
                'ablation_bank1024', 'quick', 'quick_baseline'}
    assert expected <= {n.split('/')[1] for n in names}
    for n in names:
        cfg = load_config(n)
        assert cfg.training.epochs == cfg.phase1.epochs + cfg.phase2.epochs

"The segment task: train, evaluate and predict from the CLI, checkpoints and logs, the CLIP weight paths, data formats and bad input."
import json, shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import cli, error_line, sets
from trainbench.task import get_task
from trainbench.learner import TaskData, train

# Tiny settings: 32-px images (a 4 x 4 patch grid on the tiny ViT), a few epochs, a single thread's worth of work.
TINY = ['data.img_size=32', 'training.batch_size=8', 'model.decoder_ff=64']


@pytest.fixture(scope='module')
def quick_run(task_run):
    "The session's segment/quick run (4 epochs, checkpoint_every=2, per-prompt metrics): (run directory, stderr)."
    return task_run('segment')


def test_run_directory_results_and_summary(quick_run):
    run_dir, err = quick_run
    res = json.loads((run_dir/'results.json').read_text())
    assert res['split'] == 'test'
    for k in ('iou', 'dice', 'pixel_accuracy', 'mean_iou', 'mean_dice', 'mean_pixel_accuracy'): assert 0 <= res[k] <= 1, k
    assert set(res['per_prompt']) == {'segment taping area', 'segment joint tape', 'segment drywall seam', 'segment crack', 'segment wall crack'}
    assert set(res['per_dataset']) == {'taping', 'cracks'} and res['n_images'] == sum(d['n'] for d in res['per_dataset'].values())
    summary = json.loads((run_dir/'summary.json').read_text())
    recs = json.loads((run_dir/'metrics.json').read_text())['epochs']
    assert summary['status'] == 'completed' and summary['monitor'] == 'valid_iou'
    assert summary['best_val_iou'] == max(r['valid_iou'] for r in recs)
    assert summary['best_val_dice'] == max(r['valid_dice'] for r in recs)
    assert {'valid_iou_segment_crack', 'valid_dice_segment_taping_area', 'valid_pixel_accuracy', 'train_iou'} <= set(recs[0])
    assert (run_dir/'best_model.pth').exists() and (run_dir/'final_model.pth').exists()
    assert sorted(p.name for p in run_dir.glob('epoch_*.pth')) == ['epoch_2.pth', 'epoch_4.pth']   # checkpoint_every=2
    ck = torch.load(run_dir/'epoch_2.pth', weights_only=True)
    assert ck['epoch'] == 2 and ck['info']['prompts'][0] == 'segment taping area'
    # the console: losses and metrics, then the LR and the early-stopping status, every epoch
    assert err.count('early stopping: ') == 4 and 'iou=' in err and 'dice=' in err and 'pixel_accuracy=' in err
    preds = __import__('pandas').read_csv(run_dir/'predictions.csv')
    assert len(preds) == res['n_images'] and {'image', 'dataset', 'prompt', 'iou', 'dice', 'target_pixels'} <= set(preds.columns)


def test_tensorboard_has_per_prompt_metrics_and_lr(quick_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run_dir, _ = quick_run
    ea = EventAccumulator(str(run_dir/'tensorboard')).Reload()
    tags = set(ea.Tags()['scalars'])
    assert {'train/loss', 'batch/train_loss', 'batch/lr', 'valid/iou', 'valid/dice', 'valid/pixel_accuracy', 'valid/iou_segment_crack'} <= tags


def test_predict_writes_mask_and_overlay(quick_run, walls, tmp_path):
    run_dir, _ = quick_run
    img = sorted((walls/'cracks'/'test_img').iterdir())[0]
    code, out, err = cli('predict', run_dir, img, '--prompt', 'segment crack', '--out', tmp_path)
    assert code == 0, err
    assert out.startswith(str(img)) and 'prompt=segment crack' in out
    mask, overlay = Image.open(tmp_path/f'{img.stem}_segment_crack_mask.png'), Image.open(tmp_path/f'{img.stem}_segment_crack_overlay.png')
    assert mask.size == overlay.size == Image.open(img).size
    assert set(np.unique(np.asarray(mask))) <= {0, 255}
    code, _, err = cli('predict', run_dir, img)
    assert code != 0 and 'needs --prompt' in error_line(err)


def test_evaluate_on_val(quick_run):
    run_dir, _ = quick_run
    code, _, err = cli('evaluate', run_dir, '--split', 'val')
    assert code == 0, err
    assert json.loads((run_dir/'results_val.json').read_text())['split'] == 'val'


def test_resume_bf16_and_complex_head(walls, tmp_path):
    "A bf16 run with the complex head, stopped after 2 epochs and resumed to 3: each epoch recorded once."
    over = {'data.root_dir': str(walls), 'data.img_size': 32, 'model.decoder_ff': 64, 'model.complex_trans_conv': True,
            'training.mixed_precision': 'bf16', 'training.epochs': 2, 'output.tensorboard': False}
    run = train('segment/quick', over, output_dir=tmp_path)
    run = train(resume=run.dir, overrides={'training.epochs': 3})
    assert [r['epoch'] for r in json.loads((run.dir/'metrics.json').read_text())['epochs']] == [1, 2, 3]
    assert run.summary['status'] == 'completed'


def _cfg(walls, **kw):
    task = get_task('segment')
    from trainbench.config import load_config
    return task, load_config('segment/quick', {'data.root_dir': str(walls), 'data.img_size': 32, **kw})


def test_clip_weights_from_a_local_file(walls, tmp_path):
    "model.clip_pretrained as a file goes through open_clip's create_model(..., pretrained=file); a missing file is named."
    from trainbench.features import create_clip
    ref = create_clip('tiny-vit')[0]
    torch.nn.init.normal_(ref.visual.proj)
    torch.save(ref.state_dict(), tmp_path/'tiny.pt')
    task, cfg = _cfg(walls, **{'model.pretrained': True, 'model.clip_pretrained': str(tmp_path/'tiny.pt')})
    m = task.model(cfg, TaskData(None, info={'prompts': ['segment crack']}))
    assert torch.equal(m.clip.visual.proj, ref.visual.proj)
    assert torch.equal(m.prompt_emb, ref.encode_text(m.tokenizer(['segment crack'])).detach())
    task, cfg = _cfg(walls, **{'model.pretrained': True, 'model.clip_pretrained': str(tmp_path/'missing.pt')})
    with pytest.raises(Exception, match='model.clip_pretrained: checkpoint .*missing.pt does not exist'):
        task.model(cfg, TaskData(None, info={'prompts': ['a']}))


def test_formats_negatives_and_aligned_augmentation(walls):
    "COCO polygons read like mask folders; negatives get another dataset's prompt and an empty mask; flips keep masks aligned."
    task, cfg = _cfg(walls, **{'data.datasets': [{'name': 'cracks_coco', 'prompts': ['segment crack']},
                                                 {'name': 'taping', 'prompts': ['segment taping area']}],
                               'data.negative_prob': 1.0, 'data.num_workers': 0})
    data = task.data(cfg)
    ds = data.dls.train.dataset
    for i in range(len(ds)):
        img, p, mask = ds[i]
        assert mask.sum() == 0 and data.info['prompts'][p] != {'cracks_coco': 'segment crack', 'taping': 'segment taping area'}[ds.items[i].dataset]
    ds.negative_prob = 0
    from trainbench.readers.segment import load_mask
    for i in range(6):   # the darkest pixels (crack) or brightest (tape) of the augmented image lie inside its augmented mask
        img, p, mask = ds[i]
        g = img.mean(0)
        inside = g[mask[0] > 0].mean() - g[mask[0] == 0].mean()
        assert (inside < 0) if ds.items[i].dataset == 'cracks_coco' else (inside > 0)
        assert mask.sum() > 0 and set(mask.unique().tolist()) <= {0., 1.}


def _copy(walls, tmp_path, name):
    return Path(shutil.copytree(walls/name, tmp_path/'data'/name))


def _train_cli(tmp_path, *extra):
    return cli('train', 'segment/quick', *sets(f'data.root_dir={tmp_path/"data"}', *TINY, 'training.epochs=1', 'output.tensorboard=false',
                                               *extra), '--output-dir', tmp_path/'out')


ONLY_CRACKS = 'data.datasets=[{name: cracks, prompts: [segment crack]}]'


def test_mask_with_wrong_size_is_named(walls, tmp_path):
    root = _copy(walls, tmp_path, 'cracks')
    lab = sorted((root/'train_lab').iterdir())[3]
    Image.open(lab).resize((40, 30)).save(lab)
    code, _, err = _train_cli(tmp_path, ONLY_CRACKS)
    img = root/'train_img'/(lab.stem + '.jpg')
    assert code != 0 and error_line(err) == f'error: {lab}: mask is 40x30, its image {img} is 128x128'


def test_non_binary_mask_is_thresholded_with_a_warning(walls, tmp_path):
    root = _copy(walls, tmp_path, 'cracks')
    lab = sorted((root/'train_lab').iterdir())[0]
    m = np.asarray(Image.open(lab)).astype(np.uint8)
    Image.fromarray(np.where(m > 0, 200, 30).astype(np.uint8)).save(lab)
    code, _, err = _train_cli(tmp_path, ONLY_CRACKS)
    assert code == 0, err
    assert f'cracks: 1 mask(s) are not binary (e.g. {lab}); thresholded at 127' in err
    from trainbench.readers.segment import SegItem, load_mask
    assert (load_mask(SegItem(None, 'cracks', mask=lab)) == (m > 0)).all()


def test_coco_annotation_of_a_missing_image(walls, tmp_path):
    root = _copy(walls, tmp_path, 'taping')
    j = root/'train'/'_annotations.coco.json'
    d = json.loads(j.read_text())
    (root/'train'/d['images'][2]['file_name']).unlink()
    j.write_text(json.dumps(d))
    code, _, err = _train_cli(tmp_path, 'data.datasets=[{name: taping, prompts: [segment taping area]}]')
    assert code != 0 and error_line(err).startswith(f"error: {j}: image id 2 refers to {root/'train'/d['images'][2]['file_name']}, which does not exist")


def test_empty_prompt_list(walls, tmp_path):
    code, _, err = _train_cli(tmp_path, 'data.datasets=[{name: cracks, prompts: []}]')
    assert code != 0 and "dataset 'cracks' has an empty prompt list" in error_line(err)
    assert 'data.datasets.prompts' in error_line(err)

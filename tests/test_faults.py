"""Fault injection (issue 17): bad names, a user's files, failed and concurrent resumes, kill -9 leftovers, non-finite
values, 16-bit and symlinked images, predict outputs per input, and a killed run that resumes to the same metrics.

Each test injects one fault and checks the promise: one clear line and a non-zero exit where the request cannot be met,
nothing lost, nothing written outside the output directory."""
import hashlib, json, logging, os, shutil, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TINY, cli, error_line, last_line, sets


def _tree(d)->dict:
    "{relative path: sha256} of every file under `d`: what 'left exactly as it was' compares."
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(d).rglob('*')) if p.is_file()}


def _strict_json(path):
    "Read `path` as strict JSON: NaN or Infinity fail the test."
    def bad(c): raise AssertionError(f'{path}: {c} is not JSON')
    return json.loads(Path(path).read_text(), parse_constant=bad)


def _link_or_copy(src, dst):
    "Checkpoints are only ever replaced (atomic rename), never written in place, so a copy of a run may share them."
    if src.endswith('.pth'): os.link(src, dst)
    else: shutil.copy2(src, dst)


@pytest.fixture(scope='module')
def finished(task_data, tmp_path_factory):
    "(run directory, overrides) of a finished two-epoch classify run; tests that change a run change a copy of it."
    ov = [f'data.root_dir={task_data("classify")}', *TINY['classify']]
    code, out, err = cli('train', 'classify/quick', *sets(*ov), '--output-dir', tmp_path_factory.mktemp('faults')/'out')
    assert code == 0, err
    return last_line(out), ov


@pytest.fixture
def run_copy(finished, tmp_path):
    return Path(shutil.copytree(finished[0], tmp_path/'run', copy_function=_link_or_copy))


# --- 1. names that become paths ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('key,value', [('experiment_name', '../../../x'), ('output.run_name', '../../x'), ('output.run_name', '/tmp/trainbench_test_faults_abs_run'),
                                       ('experiment_name', '..')])
def test_names_cannot_leave_the_output_dir(tmp_path, monkeypatch, key, value):
    monkeypatch.chdir(tmp_path)   # a relative escape would land beside tmp_path/out
    if value.startswith('/'): shutil.rmtree(value, ignore_errors=True)   # (this test's own path, left by a version without the fix)
    code, _, err = cli('train', 'classify/quick', *sets(f'{key}={value}'), '--output-dir', tmp_path/'out')
    assert code != 0
    assert error_line(err) == (f"error: --set {key}={value}: {key}: must be one folder name, without '/', '..' "
                               f"or an absolute path (got '{value}')")
    assert list(tmp_path.iterdir()) == [] and not (value.startswith('/') and Path(value).exists())


def test_sweep_name_cannot_leave_the_output_dir(tmp_path):
    sweep = tmp_path/'s.yaml'
    sweep.write_text('name: ../../x\nbase: classify/quick\nexperiments:\n  a: {training.lr: 0.001}\n')
    code, _, err = cli('sweep', sweep, '--output-dir', tmp_path/'out')
    assert code != 0 and error_line(err).startswith(f"error: {sweep}:1: name: must be one folder name")
    assert sorted(p.name for p in tmp_path.iterdir()) == ['s.yaml']


# --- 2. synth over a user's files ---------------------------------------------------------------------------------------

def test_synth_never_overwrites_a_users_files(tmp_path):
    dest = tmp_path/'mine'
    (dest/'train'/'circle').mkdir(parents=True)
    (dest/'train'/'circle'/'circle_0000.jpg').write_bytes(b'a month of labelling')
    (dest/'notes.txt').write_text('mine')
    before = _tree(dest)
    code, _, err = cli('synth', 'classify', dest, '--n', 1)
    assert code != 0 and error_line(err) == (f'error: {dest}: not empty (2 entries, e.g. notes.txt); give --force to write the '
                                             f'synthetic files into it (only the files the generator writes are replaced)')
    assert _tree(dest) == before
    code, out, err = cli('synth', 'classify', dest, '--n', 1, '--force')
    assert code == 0, err
    after, fresh = _tree(dest), tmp_path/'fresh'
    cli('synth', 'classify', fresh, '--n', 1)
    made = _tree(fresh)
    assert set(after) == set(made) | set(before)                                       # the generator's files added
    assert all(after[k] == before[k] for k in before if k not in made)                # every other file of the user's as it was
    assert not [p for p in dest.iterdir() if p.name.startswith('.')]                 # no staging folder left


@pytest.mark.parametrize('n', [0, -5])
def test_synth_size_must_be_positive(tmp_path, n):
    code, _, err = cli('synth', 'classify', tmp_path/'d', '--n', n)
    assert code != 0 and error_line(err) == f'error: synth: --n must be a positive number of items (got {n})'
    assert not (tmp_path/'d').exists()


# --- 3. a resume that cannot start --------------------------------------------------------------------------------------

def _edit_config(run, key, value):
    import yaml
    cfg = yaml.safe_load((run/'config.yaml').read_text())
    cfg['model'][key] = value
    (run/'config.yaml').write_text(yaml.safe_dump(cfg, sort_keys=False))


class _Payload:
    "A pickle that runs a command when it is loaded."
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (os.system, (f'touch {self.marker}',))


@pytest.mark.parametrize('fault', ['set_model', 'edited_config', 'missing_data', 'no_such_device', 'truncated_checkpoint',
                                   'malicious_checkpoint'])
def test_failed_resume_leaves_the_run_as_it_was(run_copy, tmp_path, fault):
    more = []
    if fault == 'set_model': more = sets('model.name=resnet34')
    if fault == 'edited_config': _edit_config(run_copy, 'name', 'resnet34')
    if fault == 'missing_data': more = sets(f'data.root_dir={tmp_path/"gone"}')
    if fault == 'no_such_device': more = sets('training.device=nodevice')
    if fault == 'truncated_checkpoint':
        data = (run_copy/'final_model.pth').read_bytes()
        (run_copy/'final_model.pth').unlink(); (run_copy/'final_model.pth').write_bytes(data[:len(data)//3])
    if fault == 'malicious_checkpoint':
        import torch
        (run_copy/'final_model.pth').unlink(); torch.save({'model': _Payload(tmp_path/'pwned')}, run_copy/'final_model.pth')
    before = _tree(run_copy)
    code, _, err = cli('train', '--resume', run_copy, *more)
    assert code != 0
    line = error_line(err)
    assert len(line) < 400, line                                                      # one line, not a 10 KB state-dict dump
    expect = {'set_model': 'the checkpoint does not fit the model', 'edited_config': 'the checkpoint does not fit the model',
              'missing_data': 'does not exist', 'no_such_device': 'training.device', 'truncated_checkpoint': 'cannot load checkpoint',
              'malicious_checkpoint': 'cannot load checkpoint (UnpicklingError: Weights only load failed'}[fault]
    assert expect in line, line
    assert not (tmp_path/'pwned').exists()                                            # nothing in a checkpoint runs
    assert _tree(run_copy) == before                                                  # config.yaml, summary.json, train.log: as they were
    assert _strict_json(run_copy/'summary.json')['status'] == 'completed'
    if fault == 'set_model':                                                          # so the run still evaluates
        code, _, err = cli('evaluate', run_copy)
        assert code == 0, err


def test_a_run_that_cannot_start_leaves_no_folder(tmp_path, task_data):
    code, _, err = cli('train', 'classify/quick', *sets(f'data.root_dir={task_data("classify")}', 'training.device=cpu',
                                                        'training.mixed_precision=fp16'), '--output-dir', tmp_path/'out')
    assert code != 0 and 'fp16 needs CUDA' in error_line(err)
    assert not (tmp_path/'out').exists()


# --- 4. two processes on one run ----------------------------------------------------------------------------------------

def test_second_process_on_a_run_is_refused(run_copy):
    # another process holds the run's lock as `run_lock` takes it (flock on the folder); a light process, to start fast
    holder = subprocess.Popen([sys.executable, '-c', 'import fcntl, os, sys, time\nfd = os.open(sys.argv[1], os.O_RDONLY)\n'
                               'fcntl.flock(fd, fcntl.LOCK_EX)\nprint("locked", flush=True); time.sleep(60)', str(run_copy)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        before = _tree(run_copy)
        code, _, err = cli('train', '--resume', run_copy)
        assert code != 0 and error_line(err) == (f'error: {run_copy}: another process is training this run; '
                                                 f'wait for it to end, or resume it then')
        assert _tree(run_copy) == before
    finally:
        holder.kill(); holder.wait(timeout=30)


# --- 5. kill -9 leftovers -------------------------------------------------------------------------------------------------

def test_resume_removes_what_a_killed_write_left(run_copy):
    stale = run_copy/'.final_model.pth.k1ll9x.tmp'
    stale.write_bytes(os.urandom(1 << 20))                    # a checkpoint write that kill -9 cut short
    code, out, err = cli('train', '--resume', run_copy)
    assert code == 0, err
    assert not list(run_copy.glob('.*.tmp'))
    assert 'Removed 1 temporary file(s) an interrupted write left: .final_model.pth.k1ll9x.tmp' in (run_copy/'train.log').read_text()


# --- 6. non-finite values -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('value', ['.inf', '.nan', '1e400'])
def test_non_finite_config_values_are_refused(tmp_path, value):
    code, _, err = cli('train', 'classify/quick', *sets(f'training.lr={value}'), '--output-dir', tmp_path/'out')
    assert code != 0 and error_line(err).startswith(f'error: --set training.lr={value}: training.lr: input should be a finite number')
    assert not (tmp_path/'out').exists()


def test_a_loss_that_turns_non_finite_fails_the_run_with_its_epoch(task_data, tmp_path):
    code, out, err = cli('train', 'classify/quick', *sets(f'data.root_dir={task_data("classify")}', *TINY['classify'],
                                                          'training.lr=1e300'), '--output-dir', tmp_path/'out')
    assert code != 0
    assert error_line(err).startswith('error: the training loss became NaN or infinite in epoch 1; the run stopped there'), err
    run_dir, = (tmp_path/'out').glob('classify/quick/*')
    summary = _strict_json(run_dir/'summary.json')
    assert summary['status'] == 'failed' and 'in epoch 1' in summary['error']
    assert not (run_dir/'metrics.json').exists() and not (run_dir/'final_model.pth').exists()   # no NaN epoch recorded or saved
    for f in run_dir.glob('*.json'): _strict_json(f)


# --- 7. images: 16 bits, symlinks -----------------------------------------------------------------------------------------

def _png16(path, a):
    "A 16-bit PNG (grayscale HxW or RGB HxWx3), written by hand: Pillow writes no 16-bit RGB."
    import struct, zlib
    a = np.asarray(a, dtype='>u2')
    raw = b''.join(b'\0' + row.tobytes() for row in a)
    def chunk(t, d): return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', a.shape[1], a.shape[0], 16, 2 if a.ndim == 3 else 0, 0, 0, 0))
                     + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))
    return path


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    from trainbench.data import load_image
    levels = [0, 1000, 30000, 65535]
    gray = load_image(_png16(tmp_path/'g.png', np.array([levels]*2, np.uint16)))
    rgb = load_image(_png16(tmp_path/'c.png', np.full((2, 2, 3), levels[1:], np.uint16)))
    want = np.round(np.array(levels)/257)
    assert np.abs(gray[0, 0].numpy() - want).max() <= 1, gray[0, 0]                    # [0, 4, 117, 255], not [0, 255, 255, 255]
    assert (gray[0] == gray[1]).all() and (gray[0] == gray[2]).all()
    assert np.abs(rgb[:, 0, 0].numpy() - want[1:]).max() <= 1, rgb[:, 0, 0]


def test_symlink_loop_and_links_count_each_image_once(task_data, tmp_path):
    from trainbench.readers.imagefolder import read_image_folder
    root = Path(shutil.copytree(task_data('classify'), tmp_path/'data'))
    _, before = read_image_folder(root)
    cls = sorted((root/'train').iterdir())[0]
    (cls/'loop').symlink_to(cls, target_is_directory=True)              # train/<class>/loop -> train/<class>
    (cls/'again.jpg').symlink_to(sorted(cls.glob('*.jpg'))[0])           # one image under a second name
    _, after = read_image_folder(root)
    assert len(after['train'][0]) == len(before['train'][0])
    assert len(set(after['train'][0])) == len(after['train'][0])


# --- 8. predict outputs ---------------------------------------------------------------------------------------------------

def test_segment_predict_names_each_input_apart(task_run, task_data, tmp_path):
    run_dir, _ = task_run('segment')
    imgs = sorted((task_data('segment')/'cracks'/'test_img').iterdir())[:2]
    for d, src in zip('ab', imgs): (tmp_path/d).mkdir(); shutil.copy(src, tmp_path/d/'img.jpg')
    code, out, err = cli('predict', run_dir, tmp_path/'a'/'img.jpg', tmp_path/'b'/'img.jpg', '--prompt', 'segment crack',
                         '--out', tmp_path/'masks')
    assert code == 0, err
    masks = sorted(p.name for p in (tmp_path/'masks').glob('*_mask.png'))
    assert masks == ['a_img_segment_crack_mask.png', 'b_img_segment_crack_mask.png'], masks


# --- 9. a killed run resumes to the same metrics ------------------------------------------------------------------------

def test_stopped_and_resumed_run_equals_the_uninterrupted_one(finished, tmp_path):
    import torch
    from fastai.callback.core import Callback
    from trainbench.learner import StopTraining, run_epoch, train
    whole, ov = finished
    stop = StopTraining()
    class StopInEpoch2(Callback):
        def after_batch(self):
            if self.training and run_epoch(self.learn) == 2 and self.iter == 1: stop.requested.set()
    run = train('classify/quick', ov, output_dir=tmp_path, cbs=[stop, StopInEpoch2()])
    assert run.summary['status'] == 'stopped' and run.summary['total_epochs'] == 1
    torch.manual_seed(1234); np.random.seed(1234)            # a process whose generators moved on, as a new one's would differ
    run = train(resume=run.dir)
    assert (run.dir/'metrics.json').read_text() == (whole/'metrics.json').read_text()
    a, b = (torch.load(d/'final_model.pth', weights_only=True)['model'] for d in (run.dir, whole))
    assert all(torch.equal(a[k], b[k]) for k in a)


# --- 10. messages ---------------------------------------------------------------------------------------------------------

def test_damaged_feature_cache_is_told_once(task_data, tmp_path):
    from trainbench.features import CNNFeatures, FeatureCache, extract
    files = sorted((task_data('rank')/'train_val_imgs').iterdir())[:4]
    ext = CNNFeatures('resnet18', 'layer1', pretrained=False, img_size=32)
    assert len(files) == 4
    first = extract(files, ext, tmp_path)
    FeatureCache(tmp_path, ext).index_path.write_text('{"keys": [')                   # damaged
    seen = []
    h = logging.Handler(); h.emit = lambda r: seen.append(r.getMessage())
    logging.getLogger('trainbench.features').addHandler(h)
    try: again = extract(files, ext, tmp_path)
    finally: logging.getLogger('trainbench.features').removeHandler(h)
    assert sum('damaged cache' in m for m in seen) == 1, seen
    np.testing.assert_allclose(again, first, rtol=1e-5)


def test_set_typos_are_blamed_on_the_set_with_a_useful_hint():
    code, _, err = cli('train', 'classify/quick', *sets('trainin.lr=1'))
    assert code != 0 and error_line(err) == "error: --set trainin.lr=1: trainin: unknown key (did you mean 'training'?)"
    code, _, err = cli('train', 'classify/quick', *sets('training.learnin_rate=1'))
    assert code != 0 and error_line(err) == "error: --set training.learnin_rate=1: training.learnin_rate: unknown key (did you mean 'lr'?)"


def test_duplicate_entries_are_named(task_data, tmp_path):
    import pandas as pd
    from trainbench.core import DataError
    from trainbench.readers.chestxray import read_chestxray
    from trainbench.readers.iqa import KONIQ_CSV, read_kadid, read_koniq
    kadid = Path(shutil.copytree(task_data('iqa'), tmp_path/'kadid'))                # one KADID image under two references
    df = pd.read_csv(kadid/'dmos.csv', dtype=str)
    other = next(r for r in df.ref_img if r != df.ref_img[0])
    pd.concat([df, df.iloc[[0]].assign(ref_img=other)]).to_csv(kadid/'dmos.csv', index=False)
    with pytest.raises(DataError, match=rf"dmos.csv:{len(df) + 2}: image {df.dist_img[0]} is listed twice \(also at .*dmos.csv:2\)"):
        read_kadid(kadid)
    koniq = tmp_path/'koniq'; (koniq/'512x384').mkdir(parents=True)                  # a KonIQ image scored twice
    for n in ('a.jpg', 'b.jpg'): Image.new('RGB', (8, 8)).save(koniq/'512x384'/n)
    pd.DataFrame({'image_name': ['a.jpg', 'b.jpg', 'a.jpg'], 'MOS_zscore': [1, 2, 3]}).to_csv(koniq/KONIQ_CSV, index=False)
    with pytest.raises(DataError, match=rf'{KONIQ_CSV}:4: image a.jpg is listed twice \(also at .*:2\)'): read_koniq(koniq)
    cxr = Path(shutil.copytree(task_data('multilabel'), tmp_path/'cxr'))               # a repeated line of train_val_list.txt
    lines = (cxr/'train_val_list.txt').read_text().splitlines()
    (cxr/'train_val_list.txt').write_text('\n'.join(lines + lines[:1]) + '\n')
    with pytest.raises(DataError, match=rf'train_val_list.txt:{len(lines) + 1}: image {lines[0]} is listed twice \(also at .*:1\)'):
        read_chestxray(cxr)


def test_decompression_bomb_is_called_too_large(task_data, monkeypatch):
    from trainbench.core import DataError
    from trainbench.data import check_images, open_image
    img = sorted((task_data('classify')/'train').rglob('*.jpg'))[0]
    w, h = Image.open(img).size
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', w*h//4)     # this image is then a 'bomb': Pillow refuses over twice the limit
    with pytest.raises(DataError, match=rf'{img}: image too large \({w} x {h}, over the {w*h//2} pixels Pillow decodes\)'): check_images([img])
    with pytest.raises(DataError, match=r'image too large'): open_image(img)


def test_a_full_disk_is_named(tmp_path):
    import torch
    from trainbench.core import TrainbenchError, write_json
    from trainbench.runs import save_checkpoint
    disk = tmp_path/'disk'; disk.mkdir()
    res = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', str(disk)], capture_output=True, text=True)
    if res.returncode != 0: pytest.skip(f'a small tmpfs cannot be mounted here (needs root): {res.stderr.strip()}')
    try:
        with pytest.raises(TrainbenchError, match=f'^No space left on device: {disk}/final_model.pth$'):
            save_checkpoint(disk/'final_model.pth', model={'w': torch.zeros(1 << 20)})   # 4 MB: torch says 'unexpected pos'
        with pytest.raises(TrainbenchError, match=f'^No space left on device: {disk}/metrics.json$'):
            write_json(disk/'metrics.json', {'epochs': list(range(300_000))})
        assert list(disk.iterdir()) == []                                              # no temporary file left behind
    finally: subprocess.run(['umount', str(disk)], check=True)

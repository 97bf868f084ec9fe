"model.pretrained loads real torchvision weights from the local torch cache, or fails saying where to put them."
import json
from pathlib import Path

import torch
import torchvision

from conftest import FAST, cli, error_line, sets
from trainbench.models import weights_cache_path


def test_missing_weights_fail_with_where_to_put_them(shapes, tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path/'torch'))
    expected = tmp_path/'torch'/'hub'/'checkpoints'/'mobilenet_v3_small-047dcff4.pth'
    assert weights_cache_path('mobilenet_v3_small') == expected
    code, _, err = cli('train', 'classify/mobilenet_v3_small', *sets(f'data.root_dir={shapes}', *FAST),
                       '--output-dir', tmp_path/'out')
    line = error_line(err)
    assert code != 0 and f'save it as {expected}' in line and 'model.pretrained' in line
    run_dir, = (tmp_path/'out').glob('classify/*/*')
    assert json.loads((run_dir/'summary.json').read_text())['status'] == 'failed'


def test_cached_weights_are_loaded_and_the_frozen_part_stays_put(shapes, tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path/'torch'))
    torch.manual_seed(123)
    reference = torchvision.models.mobilenet_v3_small()          # stands in for the ImageNet file
    path = weights_cache_path('mobilenet_v3_small')
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    code, out, err = cli('train', 'classify/mobilenet_v3_small', *sets(f'data.root_dir={shapes}', *FAST, 'training.epochs=1'),
                         '--output-dir', tmp_path/'out')
    assert code == 0, err
    assert 'Loaded pretrained weights for mobilenet_v3_small' in err
    assert 'Model: mobilenet_v3_small, Parameters: 1.5M (1.3M trainable)' in err
    run_dir = Path(out.strip().splitlines()[-1])
    sd = torch.load(run_dir/'final_model.pth', weights_only=True)['model']
    # 70% of the backbone's layers are frozen: their weights are exactly the file's after training
    assert torch.equal(sd['features.0.0.weight'], reference.state_dict()['features.0.0.weight'])
    assert torch.equal(sd['features.6.block.0.0.weight'], reference.state_dict()['features.6.block.0.0.weight'])
    # the last backbone layers and the head trained
    assert not torch.equal(sd['features.12.0.weight'], reference.state_dict()['features.12.0.weight'])
    assert sd['classifier.3.weight'].shape == (4, 1024)


def test_pretrained_from_a_file_path(shapes, tmp_path):
    torch.manual_seed(5)
    reference = torchvision.models.resnet18()
    f = tmp_path/'my_resnet18.pth'
    torch.save(reference.state_dict(), f)
    code, out, err = cli('train', 'classify/quick', *sets(f'data.root_dir={shapes}', *FAST, 'training.epochs=1',
                                                         f'model.pretrained={f}', 'model.freeze_ratio=0.5'),
                         '--output-dir', tmp_path/'out')
    assert code == 0, err
    sd = torch.load(Path(out.strip().splitlines()[-1])/'final_model.pth', weights_only=True)['model']
    assert torch.equal(sd['conv1.weight'], reference.conv1.weight)
    code, _, err = cli('train', 'classify/quick', *sets(f'data.root_dir={shapes}', f'model.pretrained={tmp_path/"nope.pth"}'),
                       '--output-dir', tmp_path/'out2')
    assert code != 0 and error_line(err) == f'error: model.pretrained: weights file {tmp_path/"nope.pth"} does not exist'

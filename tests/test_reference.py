"""The reference systems' own configs and commands, rebuilt from their documents in ../shared/seeds/, through
`trainbench train` and `trainbench convert`: sim-bench's frozen/ and siamese_e2e/ YAML (000), HyperIQA's flags (001),
the segmentation script's flags (002), the CXR classifier's YAML and commands (003), classify's params.yaml (004).
Most check the resolved config; one sim-bench file and one segmentation command (with its resume) train, tiny."""
import json, shlex
from pathlib import Path

import pytest
import yaml

from conftest import cli, error_line, last_line
from trainbench.cli import build_parser
from trainbench.config import list_templates, load_config
from trainbench.reference import flag_overrides
from trainbench.runs import run_name

# 000: the "YAML Configuration" block of sim-bench's training README, comments and all
SIM_BENCH = '''data:
  root_dir: "data/phototriage"
  min_agreement: 0.7         # Agreement threshold for labels
  min_reviewers: 2           # Minimum reviewers per pair
  quick_experiment: null     # Set to 0.1 for 10% of data

model:
  # Feature types (frozen mode only)
  use_clip: true
  use_cnn: true
  use_iqa: false

  # CNN settings
  cnn_backbone: "resnet50"   # or "vgg16"
  cnn_layer: "layer4"        # ResNet: "layer3" or "layer4"
  cnn_freeze_mode: "none"    # E2E only: "none", "partial", "full"

  # MLP architecture (always trainable)
  mlp_hidden_dims: [512, 256]
  dropout: 0.5

training:
  batch_size: 32
  learning_rate: 0.001
  optimizer: "adamw"         # or "sgd"
  weight_decay: 0.01
  max_epochs: 50
  early_stop_patience: 10
'''
# the configs the document lists, as the generic block with what each one says it is; and the bundled template that mirrors it
SIM_BENCH_FILES = {
    'frozen/multifeature.yaml': ({'use_clip': True, 'use_cnn': True, 'use_iqa': True}, 'rank/frozen_multifeature'),
    'frozen/resnet50.yaml': ({'use_clip': False, 'use_cnn': True, 'use_iqa': False}, 'rank/frozen_resnet50'),
    'frozen/vgg16.yaml': ({'use_clip': False, 'use_cnn': True, 'cnn_backbone': 'vgg16'}, 'rank/frozen_vgg16'),
    'frozen/clip_aesthetic.yaml': ({'use_clip': True, 'use_cnn': False}, 'rank/frozen_clip'),
    'siamese_e2e/resnet50.yaml': ({}, 'rank/e2e_resnet50'),
    'siamese_e2e/vgg16.yaml': ({'cnn_backbone': 'vgg16'}, 'rank/e2e_vgg16'),
}


def _sim_bench_files(root):
    for name, (model, _) in SIM_BENCH_FILES.items():
        d = yaml.safe_load(SIM_BENCH)
        d['model'].update(model)
        p = root/'configs'/name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(SIM_BENCH if not model else yaml.safe_dump(d, sort_keys=False))
    return root/'configs'


def resolved(command, cwd=None):
    "The config `trainbench train ...` resolves for a documented command (the script name already replaced)."
    a = build_parser().parse_args(shlex.split(command))
    over = flag_overrides(a) + a.set + ([('output.dir', a.output_dir)] if a.output_dir else []) \
        + ([('data.quick_experiment', a.quick_experiment)] if a.quick_experiment is not None else [])
    return load_config(a.config, over)


def test_sim_bench_configs_map_onto_their_templates(tmp_path):
    "Each sim-bench config the document lists resolves to the settings of the bundled template that mirrors it."
    configs = _sim_bench_files(tmp_path)
    for name, (_, template) in SIM_BENCH_FILES.items():
        cfg, tpl = resolved(f'train {configs/name}'), load_config(template)
        keys = ['model.mode', 'training.epochs', 'training.early_stopping_patience', 'training.batch_size', 'training.optimizer',
                'training.weight_decay', 'model.mlp_hidden_dims', 'model.dropout', 'data.min_agreement', 'data.min_reviewers']
        keys += ['features.clip', 'features.cnn', 'features.iqa', 'features.cnn_backbone', 'features.cnn_layer'] \
            if name.startswith('frozen') else ['model.name', 'model.cnn_freeze_mode']
        get = lambda c, k: eval('c.' + k)
        assert {k: get(cfg, k) for k in keys} == {k: get(tpl, k) for k in keys}, name
        assert (cfg.task, cfg.training.lr, str(cfg.data.root_dir)) == ('rank', 0.001, 'data/phototriage')
    # the document's commands: --quick-experiment and --output-dir, as trainbench train takes them
    cfg = resolved(f'train {configs}/frozen/clip_aesthetic.yaml --quick-experiment 0.1')
    assert cfg.data.quick_experiment == 0.1 and cfg.features.clip and not cfg.features.cnn
    assert str(resolved(f'train {configs}/frozen/resnet50.yaml --output-dir outputs/my_experiment').output.dir) == 'outputs/my_experiment'


def test_sim_bench_config_trains_and_says_its_mapping_once(phototriage, tmp_path):
    "The document's quick test: a frozen sim-bench file with --quick-experiment, tiny features; the mapping is logged once."
    configs = _sim_bench_files(tmp_path)
    tiny = ['features.clip_model=tiny-vit', 'features.clip_pretrained=null', 'features.cnn_backbone=resnet18',
            'features.cnn_layer=layer2', 'features.cnn_pretrained=false', 'data.img_size=32', 'training.epochs=2',
            f'data.root_dir={phototriage}', 'output.tensorboard=false']
    code, out, err = cli('train', configs/'frozen/multifeature.yaml', '--quick-experiment', '0.5', '--output-dir', tmp_path/'out',
                         *[x for s in tiny for x in ('--set', s)])
    assert code == 0, error_line(err)
    assert err.count("a sim-bench frozen config, mapped onto trainbench's rank config:") == 1
    assert "model.use_iqa: True -> features.iqa=True" in err and "training.max_epochs: 50 -> training.epochs=50" in err
    run = last_line(out)
    cfg = yaml.safe_load((run/'config.yaml').read_text())
    assert (cfg['features']['iqa'], cfg['model']['mode'], cfg['training']['epochs'], cfg['data']['quick_experiment']) == (True, 'frozen', 2, 0.5)
    assert json.loads((run/'summary.json').read_text())['status'] == 'completed'


def test_unmapped_key_is_one_line_and_convert(tmp_path):
    configs = _sim_bench_files(tmp_path)
    bad = configs/'frozen'/'typo.yaml'
    bad.write_text(SIM_BENCH.replace('  use_iqa: false', '  use_iqaa: false'))
    code, out, err = cli('train', bad)
    assert code == 1 and err.count('\n') == 1, err
    assert f"{bad}:11: model.use_iqaa: a sim-bench frozen key that maps to no trainbench setting (did you mean 'model.use_iqa'?)" in err
    # convert prints trainbench YAML that trains the same config; --output writes it, and keeps an existing file
    code, out, err = cli('convert', configs/'siamese_e2e'/'resnet50.yaml')
    assert code == 0, err
    assert out.startswith('# Converted by `trainbench convert`') and load_config(yaml.safe_load(out)) == resolved(f"train {configs/'siamese_e2e'/'resnet50.yaml'}")
    dest = tmp_path/'e2e.yaml'
    assert cli('convert', configs/'siamese_e2e'/'resnet50.yaml', '--output', dest)[0] == 0 and load_config(dest).model.mode == 'e2e'
    code, _, err = cli('convert', configs/'siamese_e2e'/'resnet50.yaml', '--output', dest)
    assert code == 1 and 'exists; give --force' in err
    code, _, err = cli('convert', 'rank/quick')
    assert code == 1 and "not a reference system's config" in err


# 001: HyperIQA's "Usage Examples", `python train.py` replaced by `trainbench train iqa/hyperiqa_json`
HYPERIQA = {
    '': 'lr2e-5_bs96_ep16_val0.1_seed42',
    '--lr 1e-5 --batch_size 64': 'lr1e-5_bs64_ep16_val0.1_seed42',
    '--epochs 32 --seed 123': 'lr2e-5_bs96_ep32_val0.1_seed123',
    '--save_all_epochs': 'lr2e-5_bs96_ep16_val0.1_seed42',
    '--seed 42': 'lr2e-5_bs96_ep16_val0.1_seed42',
    '--lr 5e-5 --seed 42': 'lr5e-5_bs96_ep16_val0.1_seed42',
    '--batch_size 128 --seed 42': 'lr2e-5_bs128_ep16_val0.1_seed42',
}


def test_hyperiqa_commands():
    "Each documented command resolves to the run folder name the document gives (lr, bs, ep, val, seed), and every flag maps."
    for flags, name in HYPERIQA.items():
        cfg = resolved(f'train iqa/hyperiqa_json {flags}')
        assert run_name(cfg) == name, flags
        assert cfg.training.save_all_epochs == ('--save_all_epochs' in flags)
    cfg = resolved('train iqa/hyperiqa_json --lr_ratio 5 --weight_decay 1e-3 --patch_size 448 --train_patch_num 3 --val_patch_num 4 '
                   '--dataset_root ../datasets/ --train_json ../datasets/metas/koniq_train.json --val_split 0.2 --checkpoint_dir ck')
    assert (cfg.training.lr_ratio, cfg.training.weight_decay, cfg.data.patch_size, cfg.data.train_patch_num, cfg.data.val_patch_num) == (5, 1e-3, 448, 3, 4)
    assert (str(cfg.data.root_dir), cfg.data.format, cfg.data.val_split, str(cfg.output.dir)) == ('../datasets', 'json', 0.2, 'ck')
    assert cfg.data.train_json == str(Path('../datasets/metas/koniq_train.json').resolve())
    code, _, err = cli('train', 'classify/quick', '--lr_ratio', '10')
    assert code == 1 and "error: --lr_ratio 10: training.lr_ratio: unknown key (did you mean 'lr'?)" in err


# 002: the segmentation script's "Usage Examples", `python scripts/train.py` replaced by `trainbench train segment/baseline`
def test_segmentation_commands_resolve():
    basic = resolved('train segment/baseline --data_dir data/processed --output_dir outputs/baseline --batch_size 8 --epochs 50 --lr 1e-4')
    assert (str(basic.data.root_dir), str(basic.output.dir), basic.training.batch_size, basic.training.epochs, basic.training.lr) == \
        ('data/processed', 'outputs/baseline', 8, 50, 1e-4)
    adv = resolved('train segment/baseline --data_dir data/processed --output_dir outputs/advanced --batch_size 8 --epochs 50 --lr 1e-4 '
                   '--mixed_precision --gradient_clip 1.0 --early_stopping_patience 10 --eval_per_prompt --image_size 256')
    assert (adv.training.mixed_precision in ('fp16', 'bf16'), adv.training.grad_clip, adv.training.early_stopping_patience, adv.eval.per_prompt,
            adv.data.img_size) == (True, 1.0, 10, True, 256)


def test_segmentation_command_trains_and_resumes_from_its_checkpoint(walls, tmp_path):
    "The 'advanced' command, tiny, then the resume command given a checkpoint file with more epochs."
    code, out, err = cli(*shlex.split(f'train segment/quick --data_dir {walls} --output_dir {tmp_path} --batch_size 8 --epochs 1 --lr 1e-3 '
                                      '--mixed_precision --gradient_clip 1.0 --early_stopping_patience 10 --eval_per_prompt --image_size 32 '
                                      '--set model.decoder_ff=64 --set output.tensorboard=false'))
    assert code == 0, error_line(err)
    run = last_line(out)
    cfg = yaml.safe_load((run/'config.yaml').read_text())
    assert (cfg['training']['grad_clip'], cfg['eval']['per_prompt'], cfg['data']['img_size'], str(cfg['output']['dir'])) == (1.0, True, 32, str(tmp_path))
    code, out, err = cli('train', '--resume', run/'final_model.pth', '--epochs', '2')
    assert code == 0, error_line(err)
    assert last_line(out) == run and f'continuing its run {run}' in err
    assert json.loads((run/'summary.json').read_text())['total_epochs'] == 2


# 003: the CXR training guide: its named configs are bundled templates; its own YAML example and snippets map
CXR_NAMED = ['baseline_effv2s', 'baseline_resnet50', 'memory_rarity_effv2s', 'memory_rarity_effv2m', 'memory_rarity_resnet50',
             'memory_rarity_densenet121', 'memory_diversity_effv2s', 'memory_hybrid_effv2s', 'memory_statistical_effv2s',
             'memory_fifo_effv2s', 'ablation_no_normalize', 'ablation_topk1', 'ablation_topk5', 'ablation_bank256', 'ablation_bank1024']
CXR_EXAMPLE = '''experiment_name: my_experiment
description: "My custom experiment"

model:
  backbone: efficientnet_v2_s  # or resnet50, densenet121, etc.

memory:
  use_memory: true
  update_strategy: rarity  # or diversity, hybrid, statistical, fifo
  bank_size: 512  # 256, 512, 1024
  top_k: 3  # 1, 3, 5
  normalize_retrieved: 'both'  # or false
phase1:
  batch_size: 32  # reduce from 64
phase2:
  batch_size: 64  # reduce from 128
data:
  data_dir: /path/to/your/data  # update this
'''


def test_cxr_configs_and_commands(tmp_path):
    for name in CXR_NAMED: assert f'multilabel/{name}' in list_templates(), name   # python train.py --config configs/experiments/NAME.yaml
    p = tmp_path/'configs'/'experiments'/'my_experiment.yaml'
    p.parent.mkdir(parents=True)
    p.write_text(CXR_EXAMPLE)
    cfg = resolved(f'train {p}')
    assert (cfg.task, cfg.experiment_name, cfg.description, cfg.model.name, cfg.memory.use_memory, cfg.memory.update_strategy,
            cfg.memory.bank_size, cfg.memory.top_k, cfg.memory.normalize_retrieved, cfg.phase1.batch_size, cfg.phase2.batch_size,
            str(cfg.data.root_dir)) == ('multilabel', 'my_experiment', 'My custom experiment', 'efficientnet_v2_s', True, 'rarity',
                                        512, 3, True, 32, 64, '/path/to/your/data')
    p.write_text(CXR_EXAMPLE.replace("'both'", 'false'))
    assert resolved(f'train {p}').memory.normalize_retrieved is False
    # the legacy command: python train_fastai.py --experiment memory_rarity_effv2s --data_dir /path/to/data
    assert str(resolved('train multilabel/memory_rarity_effv2s --data_dir /path/to/data').data.root_dir) == '/path/to/data'
    p.write_text(CXR_EXAMPLE.replace('  top_k: 3', '  topk: 3'))
    code, _, err = cli('train', p)
    assert code == 1 and f"{p}:11: memory.topk: a memory-augmented CXR key that maps to no trainbench setting (did you mean 'memory.top_k'?)" in err


# 004: classify's params.yaml examples: the default, the high-accuracy and the fast configuration
CLASSIFY = {
    'model_name: mobilenet_v3_small\nepochs: 3\nbatch_size: 16\nlr: 0.0005\nfreeze_ratio: 0.7\nseed: 42\nimg_size: 224\nclasses: ["ProfA", "Room1"]\n':
        ('mobilenet_v3_small', 3, 16, 0.0005, 0.7),
    'model_name: efficientnet_b0\nepochs: 10\nbatch_size: 8\nlr: 0.0003\nfreeze_ratio: 0.8\n': ('efficientnet_b0', 10, 8, 0.0003, 0.8),
    'model_name: mobilenet_v3_small\nepochs: 1\nbatch_size: 32\nlr: 0.001\nfreeze_ratio: 0.9\n': ('mobilenet_v3_small', 1, 32, 0.001, 0.9),
}


def test_classify_params_yaml(tmp_path):
    for i, (text, want) in enumerate(CLASSIFY.items()):
        p = tmp_path/f'params{i}.yaml'
        p.write_text(text)
        cfg = resolved(f'train {p}')
        assert (cfg.model.name, cfg.training.epochs, cfg.training.batch_size, cfg.training.lr, cfg.model.freeze_ratio) == want
        code, out, _ = cli('convert', p)
        assert code == 0 and load_config(yaml.safe_load(out)) == cfg

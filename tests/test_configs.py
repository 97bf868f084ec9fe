"Bundled templates, and the reference defaults they carry."
from conftest import cli
from trainbench.config import list_templates, load_config


def test_configs_lists_and_shows_templates():
    code, out, _ = cli('configs')
    assert code == 0
    templates, sweeps = out.split('\nsweeps (trainbench sweep NAME):\n')
    names = [l.split()[0] for l in templates.splitlines()]
    assert {'classify/mobilenet_v3_small', 'classify/efficientnet_b0', 'classify/fast', 'classify/quick'} <= set(names)
    assert {f'{t}/quick' for t in ('classify', 'rank', 'iqa', 'segment', 'multilabel')} <= set(names)
    assert {'demo', 'classify/models', 'rank/features', 'iqa/seeds', 'segment/phase3', 'multilabel/ablations'} <= {l.split()[0] for l in sweeps.splitlines()}
    code, out, _ = cli('configs', '--show', 'classify/fast')
    assert code == 0 and out.startswith('task: classify')


def test_every_template_belongs_to_a_task():
    "Each task's templates validate in test_tasks.py: together they are every bundled template."
    from conftest import TASKS
    assert {n.split('/')[0] for n in list_templates()} <= set(TASKS)


def test_reference_defaults():
    c = load_config('classify/mobilenet_v3_small')
    assert (c.model.name, c.training.epochs, c.training.batch_size, c.training.lr, c.model.freeze_ratio, c.seed,
            c.data.img_size, c.model.pretrained) == ('mobilenet_v3_small', 3, 16, 5e-4, 0.7, 42, 224, True)
    t = c.training
    assert (t.optimizer, t.weight_decay, t.scheduler, t.plateau_factor, t.plateau_patience, t.min_lr,
            t.early_stopping_patience) == ('adam', 1e-4, 'plateau', 0.5, 3, 1e-7, 5)
    e = load_config('classify/efficientnet_b0')
    assert (e.model.name, e.training.epochs, e.training.batch_size, e.training.lr, e.model.freeze_ratio) == \
           ('efficientnet_b0', 10, 8, 3e-4, 0.8)
    f = load_config('classify/fast')
    assert (f.training.epochs, f.training.batch_size, f.training.lr, f.model.freeze_ratio) == (1, 32, 1e-3, 0.9)

"""Where one training step's time goes: trainbench's pipeline against the minimal loop, per task, in milliseconds by cause.

Every variant trains the task's `quick` model (one copy each, same init) on one fixed training batch, as the task's
loader delivers it, so that the data path is measured apart (last column) and each variant sees the same tensors:
- `plain`: the minimal loop: model, the task's loss, backward, fused optimizer step, on plain `torch.Tensor` inputs;
- `subclass input`: the same loop on the batch's own tensor types (torchvision's `Image` from `T.ToImage()`), whose
  `__torch_function__` runs in Python for every op it takes part in;
- `Learner, bare`: fastai's `Learner` with the same loss and optimizer, no metrics and no callbacks but its own
  (TrainEval, Recorder) and, as every trainbench `Learner` has, `PlainTensors`;
- `+ train metrics`: the task's metrics updated on every training batch (`recorder.train_metrics`, as trainbench sets);
- `pipeline`: the `Learner` as `train` builds it: `build_learner` (precision, clipping, `PlainTensors`), the run's
  callbacks (run writer, plateau, early stopping, TensorBoard) and the first stage's own (e.g. iqa's LR schedule);
- `pipeline without PlainTensors`: the pipeline as it was before issue 23 (the batch's subclasses reach the model).
Each variant runs `--steps` steps per round, in interleaved rounds after a warm-up (timers.interleaved); the figure is
the median over rounds of the per-step milliseconds. The data path: one pass of the task's fastai training loader
against a torch DataLoader over the same dataset, per batch.

What the costs are, and what issue 23 did about each (the figures are in RESULTS.md, section bench_step):
- tensor subclass dispatch: classify and multilabel batches are torchvision `Image`s (`T.ToImage()`); its
  `__torch_function__` unwraps results, so only ops that take the batch itself pay (the stem convolution). fastai's
  losses (`BaseLoss`) return a `TensorBase`, which stays a subclass: the loss's clone, its backward call, and every op the
  Recorder, the run writer and TensorBoard do on it per batch went through Python dispatch. `PlainTensors` (in every
  trainbench `Learner`) casts the batch and the loss to `torch.Tensor`; the `pipeline without PlainTensors` column is
  the pipeline before it.
- per-batch callbacks: fastai's event loop calls every callback's method for each of ~10 events per batch; the Recorder
  (smoothed loss, LR), the run writer (loss sum), TensorBoard (loss, LR) each keep tensors, no transfers. What remains
  is a fixed Python cost per batch (bench_classify measures it on a model too small to take any time itself).
- metrics during training (`train_accuracy`, `train_srcc`... in metrics.json, so they stay): `TorchMetric` now moves
  predictions to the CPU when the value is read, once per epoch (on CUDA a move per batch waits for the device);
  segment's `SegStats` keeps its per-image counts on the device likewise. The updates themselves still cost their time.
- the Recorder's per-batch loss: a tensor (no `.item()`), so no device sync per batch; in notebooks, fastai's progress
  bar prints the smoothed loss per batch (a sync on CUDA), outside the console runs measured here.
- the data path: the fastai loader against a torch DataLoader over the same dataset, per batch (last column).

Run: .venv/bin/python benchmarks/bench_step.py [--tasks classify iqa] [--rounds 5] [--steps 10] [--threads N] [--profile] [--smoke]
"""
import argparse, contextlib, copy, logging, statistics, tempfile, time
from pathlib import Path

import torch
from fastai.callback.progress import ProgressCallback
from fastai.learner import Learner
from fastcore.basics import noop

from trainbench.config import load_config
from trainbench.core import log_to_console
from trainbench.learner import PlainTensors, build_learner, get_device, opt_func, start_stage, training_callbacks
from trainbench.task import get_task
from report import ratio
from timers import PhaseTimer, interleaved, pin_threads

TASKS = ('classify', 'rank', 'iqa', 'segment', 'multilabel')
# The quick templates at the sizes the throughput benchmarks use (classify's ResNet-18 at 64 px; iqa, segment, rank as quick)
SIZES = {'classify': {'model.name': 'resnet18', 'data.img_size': 64, 'training.batch_size': 16, 'model.freeze_ratio': 0},
         'rank': {}, 'iqa': {}, 'segment': {'data.img_size': 96, 'training.batch_size': 16},
         'multilabel': {'data.img_size': 64, 'phase1.batch_size': 32}}
SMOKE = {'classify': {'model.name': 'mobilenet_v3_small', 'data.img_size': 32, 'training.batch_size': 8},
         'rank': {'data.img_size': 32}, 'iqa': {'data.train_patch_num': 1},
         'segment': {'data.img_size': 32, 'training.batch_size': 4, 'model.decoder_ff': 64},
         'multilabel': {'data.img_size': 32, 'phase1.batch_size': 8, 'memory.bank_size': 16}}
PROFILES = []
WINDOW = [contextlib.nullcontext]   # what wraps the training steps of every variant: torch.profiler's `profile` with --profile
SYNTH_N = {'classify': 8, 'rank': 20, 'iqa': 3, 'segment': 12, 'multilabel': 80}


def plain(b): return tuple(o.as_subclass(torch.Tensor) if isinstance(o, torch.Tensor) else o for o in b)


def setup(name, tmp, smoke):
    task = get_task(name)
    root = task.synth(tmp/name, n=SYNTH_N[name] if smoke else {'classify': 100, 'rank': 40, 'iqa': 6, 'segment': 40, 'multilabel': 400}[name], seed=0)
    over = {'data.root_dir': str(root), 'data.num_workers': 0, 'model.pretrained': False, 'output.tensorboard': True,
            'data.cache_dir': str(tmp/f'{name}-cache'), **(SMOKE if smoke else SIZES)[name]}
    cfg = load_config(f'{name}/quick', over)
    data = task.data(cfg, get_device('cpu'))
    torch.manual_seed(0)
    return task, cfg, data, task.model(cfg, data)


def step_costs(name, tmp, rounds, steps, smoke, profile=False):
    "{variant: median ms per training step} and the data path's ms per batch, for task `name`."
    task, cfg, data, model0 = setup(name, tmp, smoke)
    st = task.stages(cfg, data)[0]
    # the pipeline's Learner, as `train` builds it, in the first stage's state
    pipe = build_learner(task, cfg, data, copy.deepcopy(model0), path=tmp/f'{name}-run')
    start_stage(pipe, st)
    dls = pipe.dls
    xb_yb = next(iter(dls.train))
    n_in = len(xb_yb) - 1 if name != 'segment' else 2   # segment: (image, prompt ids) -> mask
    n_in = {'rank': 2}.get(name, n_in)
    b = tuple(xb_yb)
    run_cbs = training_callbacks(task, cfg, tmp/f'{name}-run', data.info) + list(st.cbs)
    # the bare Learner and the one with train metrics: same model copy rules, same loss, optimizer and splitter
    def bare(metrics):
        m = copy.deepcopy(model0)
        if pipe.fast_paths['channels_last']: m = m.to(memory_format=torch.channels_last)
        l = Learner(dls, m, loss_func=pipe.loss_func, opt_func=opt_func(cfg.training), splitter=task.splitter,
                    metrics=task.metrics(cfg, data) if metrics else None, path=tmp/f'{name}-bare', model_dir='.')
        l.remove_cb(ProgressCallback); l.logger = noop; l.recorder.train_metrics = metrics
        l.add_cb(PlainTensors())
        start_stage(l, st)
        return l
    learners = {'Learner, bare': bare(False), '+ train metrics': bare(True), 'pipeline': pipe}

    def fixed_batches(learn, cbs=()):
        """One `fit(1)` of `steps` training steps on the fixed batch (one validation step); returns the seconds of the training
        phase: the steps and the callbacks' work at its ends (the train metrics' values are computed in `after_train`)."""
        timer = PhaseTimer()
        def all_batches():
            k = steps if learn.training else 1
            learn.n_iter = k
            with WINDOW[0]() if learn.training else contextlib.nullcontext():
                for i in range(k): learn.one_batch(i, b)
        learn.all_batches = all_batches
        learn.fit(1, cbs=list(cbs) + [timer])
        return timer.train_s[-1]

    # the minimal loop: a model copy, the task's loss (fastai's wrapper where the task uses one), fused optimizer
    def hand(xs):
        m = copy.deepcopy(model0)
        if pipe.fast_paths['channels_last']: m = m.to(memory_format=torch.channels_last)
        groups = task.splitter(m)
        opt = opt_func(cfg.training)([{'params': g} for g in groups], lr=cfg.training.lr).opt
        x, y = xs[:n_in], xs[n_in:]
        loss_fn = pipe.loss_func
        def run():
            m.train()
            with WINDOW[0]():
                t0 = time.perf_counter()
                for _ in range(steps):
                    loss = loss_fn(m(*x), *y)
                    opt.zero_grad(); loss.backward(); opt.step()
                return time.perf_counter() - t0
        return run
    sides = {'plain': hand(plain(b))}
    if any(type(o) is not torch.Tensor for o in b[:n_in] if isinstance(o, torch.Tensor)): sides['subclass input'] = hand(b)
    for k, l in learners.items(): sides[k] = (lambda l: lambda: fixed_batches(l, run_cbs if l is pipe else ()))(l)
    sides['pipeline without PlainTensors'] = lambda: fixed_batches(pipe, run_cbs + [RemovePlain()])
    if profile: return profile_steps(name, {k: sides[k] for k in ('plain', 'pipeline', 'pipeline without PlainTensors')}, steps)
    secs = interleaved(sides, rounds, warmup=1)
    ms = {k: statistics.median(v) / steps * 1000 for k, v in secs.items()}
    # the data path: the task's fastai loader against a torch DataLoader on the same dataset, per batch
    tdl = torch.utils.data.DataLoader(dls.train.dataset, batch_size=dls.train.bs, shuffle=True, num_workers=0, drop_last=dls.train.drop_last)
    def one_pass(dl):
        def run():
            t0 = time.perf_counter()
            for _ in dl: pass
            return (time.perf_counter() - t0) / len(dl)
        return run
    dsecs = interleaved({'fastai': one_pass(dls.train), 'torch': one_pass(tdl)}, 1 if smoke else 3, warmup=0)
    data_ms = {k: statistics.median(v)*1000 for k, v in dsecs.items()}
    types = ', '.join(sorted({type(o).__name__ for o in b[:n_in] if isinstance(o, torch.Tensor)}))
    return ms, data_ms, types


def profile_steps(name, sides:dict, steps:int):
    """torch.profiler over `steps` steps of each side (after one warm-up run): per step, the wall time, the ops dispatched
    (aten calls and `__torch_function__` overrides), the time inside ops, and the rest (Python: the loop, the Learner's
    events and callbacks, subclass dispatch). Prints the ops whose count per step differs most between the sides."""
    from torch.profiler import ProfilerActivity, profile
    stats = {}
    for k, run in sides.items():
        run()   # warm up
        def window():
            PROFILES.append(profile(activities=[ProfilerActivity.CPU]))
            return PROFILES[-1]
        WINDOW[0] = window
        try: wall = run()
        finally: WINDOW[0] = contextlib.nullcontext
        prof = PROFILES.pop()
        ev = prof.key_averages()
        top = [e for e in prof.events() if e.cpu_parent is None]   # top-level: ops, autograd's backward functions, optimizer step
        ops_ms = sum(e.cpu_time_total for e in top) / 1000 / steps
        stats[k] = dict(wall=wall*1000/steps, ops=ops_ms, n=sum(e.count for e in ev if e.key.startswith('aten::'))/steps,
                        counts={e.key: e.count/steps for e in ev})
        print(f'  {name} {k:32s} {stats[k]["wall"]:8.1f} ms/step: {stats[k]["n"]:6.0f} aten calls, {ops_ms:7.1f} ms in top-level ops '
              f'(forward ops, backward, optimizer), {stats[k]["wall"] - ops_ms:6.1f} ms outside them (Python: the loop, events, callbacks, dispatch)')
    a, b = stats['plain']['counts'], stats['pipeline']['counts']
    diff = sorted(((b.get(k, 0) - a.get(k, 0), k) for k in set(a) | set(b)), key=lambda t: -abs(t[0]))[:12]
    print(f'  {name}: calls per step, pipeline minus minimal loop: ' + ', '.join(f'{k} {d:+.0f}' for d, k in diff if d))
    return stats


class RemovePlain(PlainTensors):
    "Takes `PlainTensors` out of the fit it is passed to (the pipeline before issue 23), and puts it back after."
    order = -100
    def before_fit(self):
        self.removed = [cb for cb in self.learn.cbs if type(cb) is PlainTensors]
        self.learn.remove_cbs(self.removed)
    def before_batch(self): pass
    def after_fit(self): self.learn.add_cbs(self.removed)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--tasks', nargs='*', help='default: all five (--smoke: classify and segment, the one-input and two-input steps)')
    p.add_argument('--rounds', type=int, default=5); p.add_argument('--steps', type=int, default=10)
    p.add_argument('--threads', type=int, help="torch threads for every variant (default: torch's choice)")
    p.add_argument('--profile', action='store_true', help='torch.profiler over the minimal loop and the pipeline instead of the timing rounds')
    p.add_argument('--smoke', action='store_true', help='a few seconds: tiny data, 1 round of 2 steps (the test suite runs it)')
    a = p.parse_args(argv)
    log_to_console().setLevel(logging.WARNING)
    pin_threads(a.threads or (1 if a.smoke else None))
    if a.smoke: a.rounds, a.steps = 1, 2
    a.tasks = a.tasks or (['classify', 'segment'] if a.smoke else list(TASKS))
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, {a.rounds} interleaved rounds of {a.steps} steps on a fixed batch')
    tmp = Path(tempfile.mkdtemp())
    rows = []
    for name in a.tasks:
        if a.profile: step_costs(name, tmp, a.rounds, a.steps, a.smoke, profile=True); continue
        ms, data_ms, types = step_costs(name, tmp, a.rounds, a.steps, a.smoke)
        base = ms['plain']
        causes = {'tensor subclass input': ms.get('subclass input', base) - base,
                  'Learner + its callbacks, PlainTensors': ms['Learner, bare'] - base,
                  'train metrics': ms['+ train metrics'] - ms['Learner, bare'],
                  'run callbacks (writer, plateau, early stop, TensorBoard, stage)': ms['pipeline'] - ms['+ train metrics'],
                  'PlainTensors saves': ms['pipeline without PlainTensors'] - ms['pipeline']}
        print(f'\n{name} (inputs: {types}): minimal loop {base:.1f} ms/step, pipeline {ms["pipeline"]:.1f} ms/step, '
              f'pipeline without PlainTensors {ms["pipeline without PlainTensors"]:.1f} ms/step')
        for k, v in causes.items(): print(f'  {k:66s} {v:+7.2f} ms/step')
        print(f'  data path: fastai loader {data_ms["fastai"]:.2f} ms/batch, torch DataLoader {data_ms["torch"]:.2f} ms/batch')
        rows.append((name, base, ms, causes, data_ms))
        ratio(f'{name}: per-step cost of the pipeline over the minimal loop (fixed batch)', 'minimal loop step', ms['pipeline'] - base, None,
              unit='ms', note=f"minimal {base:.1f} ms, pipeline {ms['pipeline']:.1f} ms, before issue 23 (no PlainTensors) "
              f"{ms['pipeline without PlainTensors']:.1f} ms; " + ', '.join(f'{k} {v:+.2f} ms' for k, v in causes.items()) +
              f"; data path {data_ms['fastai']:.2f} ms/batch (fastai loader) against {data_ms['torch']:.2f} (torch DataLoader)")
    if rows: print(); print('\n'.join('TABLE ' + l for l in table(rows)))


def table(rows)->list:
    "The per-step costs as Markdown rows: one per task, ms by cause, before (no PlainTensors) and after."
    out = ['| task | minimal loop, ms/step | subclass input | Learner and its own callbacks | train metrics | run callbacks | '
           'pipeline before (no PlainTensors) | pipeline after | after / minimal loop | data path, fastai / torch loader, ms/batch |',
           '|---|---|---|---|---|---|---|---|---|---|']
    for name, base, ms, c, d in rows:
        out.append(f"| {name} | {base:.1f} | {c['tensor subclass input']:+.2f} | {c['Learner + its callbacks, PlainTensors']:+.2f} | "
                   f"{c['train metrics']:+.2f} | {c['run callbacks (writer, plateau, early stop, TensorBoard, stage)']:+.2f} | "
                   f"{ms['pipeline without PlainTensors']:.1f} | {ms['pipeline']:.1f} | {base/ms['pipeline']:.3f} | {d['fastai']:.2f} / {d['torch']:.2f} |")
    return out

if __name__ == '__main__': main()

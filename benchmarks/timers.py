"fastai callbacks that time training, shared by the benchmarks (imported as `from timers import ...`: scripts run from benchmarks/)."
import time

from fastai.callback.core import Callback


class PhaseTimer(Callback):
    "Seconds of each training phase (`train_s`) and each whole training epoch (`epoch_s`, training and validation)."
    order = 100
    def __init__(self): self.train_s, self.epoch_s = [], []
    def before_epoch(self): self.e0, self.trained = time.perf_counter(), False
    def before_train(self): self.t0, self.trained = time.perf_counter(), True
    def after_train(self): self.train_s.append(time.perf_counter() - self.t0)
    def after_epoch(self):   # evaluation after the fit (get_preds) is an epoch without training: not counted
        if self.trained: self.epoch_s.append(time.perf_counter() - self.e0)


class StepTimer(Callback):
    "Seconds of each training batch."
    order = 100
    def before_fit(self): self.times = []
    def before_batch(self): self.t0 = time.perf_counter()
    def after_batch(self):
        if self.training: self.times.append(time.perf_counter() - self.t0)

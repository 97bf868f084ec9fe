"""One line per measured ratio, in a form `run_all.py` collects into RESULTS.md (imported as `from report import ratio`:
scripts run from benchmarks/).

Each benchmark prints its readable lines as before and, for every figure that has a goal (or that the table reports),
one `RESULT {json}` line: what was measured, against what, the figure, and the goal."""
import json


def ratio(what:str,         # what was measured, e.g. 'batched 25-crop evaluation'
          against:str,      # the baseline it is measured against
          value:float,      # the figure: baseline seconds / measured seconds, or measured / baseline as `unit` says
          goal:float=None,  # the threshold; None: reported only
          higher:bool=True, # the goal is `value >= goal` (else `value <= goal`)
          unit:str='x',     # how the figure reads: 'x' (times faster), '' (a plain ratio), '%' (a share)
          note:str='',      # absolute figures, conditions
         )->dict:
    "Print one `RESULT` line and return its record."
    rec = dict(what=what, against=against, value=float(value), goal=goal, higher=higher, unit=unit, note=note,
               met=None if goal is None else bool(value >= goal if higher else value <= goal))
    print('RESULT ' + json.dumps(rec), flush=True)
    return rec

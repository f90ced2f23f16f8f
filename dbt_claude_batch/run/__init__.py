"""The run layer: one batch model's run, top to bottom.

`python_model.batch_model` is the entry point; settling, polling, harvesting, planning, spooling,
submitting, sync calls, samples, answers and results follow the run's data flow. Imports: state, api
and base (never observe).
"""

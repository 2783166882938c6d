"""The runner: what turns validated settings into tracked jobs — the job and its outcome types,
sweeps and their on-disk state, isolation in child processes, termination signals, the process's
mutable state (:mod:`.process`) and the MLflow store (:mod:`.tracking`).

It reaches the science only through :mod:`ptycho.pipeline` and :mod:`ptycho.artifacts`
(``tests/test_structure.py`` holds it to that); Hydra is met here and in ``run.py`` alone.
"""

"""The dashboard's shared UI layer: everything the page scripts in pages/ use besides `core` itself.

    state.py    session-state keys (in one place) and the active model
    cache.py    per-process resources (the compute device, the LEGO-style calibration cache) and cached calls
                into core (data, training, audits, unlearning, evaluation)
    data.py     the Model page's data sources
    targets.py  what the Audit and Unlearning pages work on: the model's representations or uploaded embeddings
    widgets.py  shared widgets: attribute types, attacker and protocol pickers, hyper-parameters, verdicts, progress
    figures.py  tables and Plotly figures (no widgets)
    jobs.py     background jobs: the process's job runner, this tab's jobs, the polling progress/cancel fragment
    history.py  finished jobs taken into the session, kept models reopened from the run history

Nothing in core imports this package; pages import it and core, never each other.
"""

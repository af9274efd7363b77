"""Data selection steps: which of a dataset's records a run trains on, chosen before the task and cached.

    data.select=zipfit   ZIP-FIT: records most aligned (by compression) to a target set   (zipfit.py, ncd.py)
    data.select=deita    Deita: complexity × quality first, then a cosine diversity filter  (deita.py)
    data.select=none     every record                                                       (steps.py)

``apply_selection`` (steps.py) runs a step, caches its choice under the content hash of its inputs and
returns the kept records with a report for ``data_steps.json``.
"""

"""What operators and data scientists see of a running scheduler.

``Observer`` (``observer.py``) is the one object a scheduler process keeps for it, across
leadership terms: the Prometheus registry (``metrics.py``), the job history writer and
reader (``history.py``), progress samples for charts; the shell reports to it, the HTTP
routes (``web.py``: ``/metrics``, ``/healthz``, ``/readyz``, the JSON API and the web UI
in ``ui.py``) read from it, authorised like the gRPC API (``webauth.py``).
"""

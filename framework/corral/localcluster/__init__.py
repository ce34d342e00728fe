"""A Corral cluster on this one machine, for demos, tests and benchmarks (never production).

``procs`` starts localmesos and Corral schedulers as child processes in their own process
groups and stops them (``corral demo``, the end-to-end tests and ``bench/`` use it);
``demo`` and ``demo_dask`` are ``corral demo`` (the scoring and Dask jobs); ``chaos`` is
the pure plan of ``corral demo --chaos`` (which spot machine goes, when, what is said).
"""

"""Corral: a Mesos framework that runs distributed batch machine learning jobs.

A job is one master task plus an elastic set of worker tasks. The package is split as
``../shared/DESIGN.md`` describes: ``core`` holds pure decisions, ``mesos`` speaks the v1
scheduler HTTP API, ``localmesos`` is a single-machine Mesos for laptops and tests,
``store`` holds durable state in ZooKeeper, ``api`` serves gRPC, and ``runtime`` is the
asyncio shell that ties them together.
"""

__version__ = "0.1.0"

"""What runs on Mesos agents: Corral's executor and the job SDK user code imports.

This package must stay small: it never imports grpc, kazoo or the ``corral`` scheduler.
"""

"""A discrete-event simulator that drives the pure core against a simulated Mesos."""

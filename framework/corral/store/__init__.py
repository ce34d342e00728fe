"""Durable state and leader election in ZooKeeper."""

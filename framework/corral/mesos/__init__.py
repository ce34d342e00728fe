"""The Mesos v1 scheduler HTTP API, spoken by Corral itself (see docs/decisions/0001)."""

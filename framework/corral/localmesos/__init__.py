"""localmesos: a single-machine Mesos master and agents following the v1 HTTP APIs."""

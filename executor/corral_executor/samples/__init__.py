"""Sample workloads that run under Corral and show how to use the job SDK."""

"""Pure scheduling decisions: no I/O, no clocks, no global randomness."""

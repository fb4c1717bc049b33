"""The pure core: selection, rendering, layering, diffing and audits over plain data.

Nothing here performs I/O, knows kopf or the Kubernetes client, or reads a clock
it was not given; every function can be tested in microseconds.
"""

"""The demo: the operator against an in-process Kubernetes API emulator, no cluster needed."""

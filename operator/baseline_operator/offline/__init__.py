"""Commands that need no cluster: reading baselines and manifests, rendering, auditing."""

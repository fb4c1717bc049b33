"""The running operator: kopf handlers, settings, work queue, reconciler, leadership."""

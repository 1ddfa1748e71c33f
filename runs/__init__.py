"""Running workflows for real: the run record, live events and the embedded executor."""

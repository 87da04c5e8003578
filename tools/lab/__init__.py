"""The lab: a campus mail path in network namespaces (see tools/lab/lab.py)."""

"""SSH access to notebook instances: one gateway in nbfleet (``gateway.py``), sessions inside the instances."""

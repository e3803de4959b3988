"""Speed and fidelity measurements that print tables (not tests)."""

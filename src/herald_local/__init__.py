"""Herald on one machine: the parts that stand in for AWS and RDS during development and tests."""

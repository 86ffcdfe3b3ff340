"""What every REST endpoint shares: auth, permissions, errors, pagination, base classes."""

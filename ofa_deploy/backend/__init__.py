"""The backend interface (three kinds of targets), timing protocol, discovery and device profiles."""

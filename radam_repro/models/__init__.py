"""Models of the paper's tasks (imported by their tasks)."""

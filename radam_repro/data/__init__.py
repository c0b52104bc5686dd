"""Data readers for the paper's tasks, in their standard on-disk layouts."""

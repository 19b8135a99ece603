"""CSVs → pandas → matplotlib.  Reads files only; imports neither torch nor the queue."""

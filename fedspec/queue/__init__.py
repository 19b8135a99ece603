"""The shared-folder work queue.  Imports neither torch nor ``fedspec.fl``: the worker runs an injected job."""

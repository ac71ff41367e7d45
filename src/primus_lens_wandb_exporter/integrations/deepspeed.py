"""deepspeed integration (placeholder until its adapter lands)."""


def on_import(module):
    """Called by the import watcher when the framework module is imported."""
    return None

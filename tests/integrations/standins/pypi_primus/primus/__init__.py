"""Stand-in for PyPI's unrelated ``primus`` distribution (not AMD's): a flat package with
no ``primus.core`` / ``primus.backends``.  Importing it must not be taken for AMD Primus."""

__version__ = "0.3.1"


def hello():
    return "unrelated"

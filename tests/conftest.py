import os, sys; sys.path.insert(0, os.path.dirname(__file__)); pytest_plugins = ["fixtures_server"]

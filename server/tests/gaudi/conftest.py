"""tests/gaudi's fixtures: `habana`, the recording stand-ins of the Habana stack (habana_standins.py)."""
from habana_standins import habana  # noqa: F401 - the fixture, for every test in this folder

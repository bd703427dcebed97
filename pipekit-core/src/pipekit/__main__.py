from .cli._main import entry

entry()

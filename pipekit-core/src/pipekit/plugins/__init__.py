"""Plugins: the hookspecs (``_hookspecs``), the plugin manager and the
name-keyed registry (``_manager``), observers (``_observers``), core's own
``file`` backend registration (``_file_backend``) and the base classes of
stage processors (``_processors``). Their public names are on ``pipekit``
itself (``pipekit.hookimpl``, ``pipekit.Stage``, ``pipekit.load_registry``);
this package imports nothing at first, so that a no-op run stays free of
pluggy."""

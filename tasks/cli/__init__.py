"""The ``mobilezoo`` command.

``command`` (LightningCLI over the tasks and data modules, the ``main`` entry point and the
commands outside LightningCLI), ``session`` (help text, short parse errors, the run folders
of evaluations), ``errors`` (one-line messages for parse and instantiation errors),
``configs`` (the shipped recipes by name, ``mobilezoo configs``) and ``weights``
(``mobilezoo weights`` and ``mobilezoo convert``).

The command sits on top of the Lightning layer: no module outside this package imports it.
Nothing is imported here.
"""

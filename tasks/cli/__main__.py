"""``python -m tasks.cli``: the ``mobilezoo`` command without its console script (tests,
benchmarks, and Lightning's DDP launcher, which starts each process with the parent's
command line)."""

from tasks.cli.command import main

main()

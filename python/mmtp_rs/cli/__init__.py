"""The ``mmtp`` command line: one module per command (learn, validate, train,
select/grade, properties, demo/eval), each with ``add_cli`` and ``run(args)``
so tests call ``run()`` directly; :mod:`mmtp_rs.cli.main` holds the entry point."""

from mmtp_rs.cli.main import main, parse_args, run


__all__ = ["main", "parse_args", "run"]

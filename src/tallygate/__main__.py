from tallygate.cli.main import cli

cli()

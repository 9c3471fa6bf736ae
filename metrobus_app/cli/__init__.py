"""The command line: the bus's commands, added to Faust's own."""
